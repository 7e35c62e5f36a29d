"""Names and addresses shared by config validation and the sinks: host name, MQTT broker URLs,
HTTP listen addresses, and credential redaction for anything that shows a URI.

It sits below `config` and the sinks (it imports neither), so config can validate a URL without
importing a sink, and no sink imports another.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from edge_runtime.util.redact import redact

__all__ = ["hostname", "topic_safe", "default_prefix", "redact", "BrokerUrl", "parse_broker_url", "parse_listen"]


def hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def topic_safe(text: str) -> str:
    """A string usable as one topic level / Home Assistant node id: [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "edge_runtime"


def default_prefix() -> str:
    return f"edge_runtime/{topic_safe(hostname())}"


@dataclass(frozen=True)
class BrokerUrl:
    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None
    prefix: str

    def redacted(self) -> str:
        """For logs: no user name, no password (some brokers take an access token as the user name);
        masked by redact.py's rule like every other URI."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="") + (":" + quote(self.password, safe="")
                                                    if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return redact(f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.prefix}")


def parse_broker_url(url: str) -> BrokerUrl:
    """mqtt://[user:pass@]host[:port]/prefix (mqtts:// for TLS). ValueError names the problem, never the password."""
    expected = "expected mqtt://[user:pass@]host[:port]/prefix or mqtts://... (TLS)"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected}; the port is not a number from 0 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError(expected)
    if not parts.hostname:
        raise ValueError(f"{expected}; the host is missing")
    if "?" in url or "#" in url:
        raise ValueError(f"{expected}; no ?query or #fragment (percent-encode '#', '/' or '@' in a password "
                         "as %23, %2F, %40; other options go in the config file's mqtt: section)")
    prefix = unquote(parts.path).strip("/")
    if any(c in prefix for c in "+#\0"):
        raise ValueError("the topic prefix must not contain the MQTT wildcards + or #")
    if "//" in prefix:
        raise ValueError("the topic prefix must not contain empty levels (//)")
    tls = scheme == "mqtts"
    return BrokerUrl(tls=tls, host=parts.hostname, port=port or (8883 if tls else 1883),
                     username=unquote(parts.username) if parts.username is not None else None,
                     password=unquote(parts.password) if parts.password is not None else None,
                     prefix=prefix or default_prefix())


def parse_listen(text: str) -> tuple[str, int]:
    """`8080`, `:8080` -> 127.0.0.1; `0.0.0.0:8080`, `192.168.1.5:8080`, `[::1]:8080`, `host:8080`."""
    expected = "expected [ADDRESS:]PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(expected)
    elif value.count(":") > 1:
        raise ValueError(f"{expected} (put an IPv6 address in brackets)")
    else:
        host, _, port = value.rpartition(":")
    host = host or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{expected}; the port must be a number from 0 to 65535")
    return host, int(port)
