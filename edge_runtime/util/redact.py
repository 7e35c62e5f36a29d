"""Text that leaves the process: no credentials, no forged log lines, always valid UTF-8.

- `redact(text)`: every URI in `text` with its password masked (`rtsp://admin:***@cam/…`), and the
  values of credential-like query parameters (`?password=***`). The userinfo is split the way FFmpeg
  splits it (libavformat av_url_split): the authority ends at the first '/', '?' or '#', and the
  user information ends at its LAST '@', so a password may hold '@' and ':' unencoded.
- `display_uri(uri)`: one source URI as it may be shown anywhere (logs, stdout records, MQTT,
  HTTP, systemd status): redacted as a whole (a password with spaces too) and valid UTF-8.
- `printable(text)`: undecodable bytes (surrogate escapes from a non-UTF-8 argv or file name) become
  U+FFFD, so a JSON line or a log line stays valid UTF-8.
- `one_line(text)`: control characters (newlines, ESC) from a model's metadata escaped, so a
  string from a file cannot forge a log line or a terminal sequence.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# Query parameters that carry a secret in camera/stream URLs: ?password= (Axis, Foscam), &pwd=,
# &loginpas= (Foscam), passphrase= (SRT), token/key/signature (cloud relays, HLS).
_SECRET_KEYS = (r"pass(?:word|wd|phrase)?|pwd|loginpas|secret|token|access_token|auth|authorization|"
                r"api_?key|key|sig|signature|credentials?")
_QUERY = re.compile(rf"(?i)([?&;](?:{_SECRET_KEYS})=)[^&;#\s]*")
_URI = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#]*)([^\s]*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _mask_authority(authority: str) -> str:
    if "@" not in authority:
        return authority
    userinfo, host = authority.rsplit("@", 1)
    if ":" not in userinfo:
        return authority            # a user name alone: no password to hide
    return f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"


def _mask_uri(scheme: str, authority: str, rest: str) -> str:
    return scheme + _mask_authority(authority) + _QUERY.sub(r"\1" + MASK, rest)


def redact(text: str) -> str:
    """Every `scheme://user:password@host…` in `text` with the password masked, and secret query values."""
    if "://" not in text:
        return text
    return _URI.sub(lambda m: _mask_uri(m.group(1), m.group(2), m.group(3)), text)


def printable(text: str) -> str:
    """`text` as valid UTF-8: undecodable bytes (surrogate escapes) become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:          # lone surrogates that are not byte escapes
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def display_uri(uri: str) -> str:
    """A source URI fit to be shown anywhere: the whole string is one URI (a password may hold spaces)."""
    text = printable(uri)
    m = re.match(r"(?i)([a-z][a-z0-9+.-]*://)([^/?#]*)(.*)\Z", text, re.S)
    if m is None:
        return redact(text)
    return _mask_uri(m.group(1), m.group(2), m.group(3))


def one_line(text: object, limit: int = 200) -> str:
    """A string from a file (model metadata, labels) made safe for one log line: control characters
    shown as escapes, undecodable bytes replaced, long values cut."""
    s = printable(str(text))
    s = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), s)
    return s if len(s) <= limit else s[:limit] + "…"


class LogSanitizer(logging.Filter):
    """On a handler: every message leaves redacted and on one line, whatever logged it (a password in an
    exception's text, a newline in a model's metadata or a file name)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:       # a bad format string: let the handler report it as usual
            return True
        clean = one_line(redact(msg), limit=4000)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def sanitise_logging() -> None:
    """Put a LogSanitizer on every handler of the root logger (after logging is configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LogSanitizer) for f in handler.filters):
            handler.addFilter(LogSanitizer())
