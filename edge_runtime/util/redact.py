"""Text that leaves the process: no credentials, no forged log lines, always valid UTF-8.

This module is the ONE place where URIs are redacted: source records (stdout, `/latest`, MQTT), log
lines (every handler carries `LogSanitizer`), HTTP bodies and the systemd status all go through it.

The rule (applied to every `scheme://…` in a text):

1. **Userinfo, always.** Everything before the authority's last '@' becomes `***`:
   `rtsp://admin:pw@cam/` -> `rtsp://***@cam/`, and so do a token alone (`https://TOKEN@host/`), a
   percent-encoded pair (`user%3Apass@`) and a token in the user-name field (`TOKEN:x-oauth-basic@`).
   No user name is kept: in some schemes the user name IS the secret. The authority is split the way
   FFmpeg splits it (libavformat av_url_split): it ends at the first '/', '?' or '#', and the user
   information ends at its LAST '@', so a password may hold '@' and ':' unencoded.
2. **Credential-like parameters, in the query and in the fragment.** In every `name=value` that follows
   '?', '&', ';' or '#', the value becomes `***` when the name looks like a credential: the name is
   percent-decoded and lower-cased, and it looks like a credential when it CONTAINS one of
   `SECRET_STEMS` (pas, pwd, secret, token, auth, key, sig, cred, sess, jwt, cookie, bearer, priv, hmac)
   or IS one of `SECRET_NAMES` (p, pw, pin, psk, otp, sid, code, hash, ticket, nonce). Examples:
   `password`, `passphrase`, `loginpas`, `auth_token`, `access_key`, `apikey`, `client_secret`,
   `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, `sessionid`, `PHPSESSID`, `jwt`, in
   any case. A substring rule masks a harmless value now and then (`keyframe=`); that is the price of
   never missing a new spelling of "token".
3. **A bare fragment** (`#` followed by no `name=value`, as in share links that carry the key there)
   becomes `#***`.

What cannot be recognised stays as it is: a secret in a path segment (`/live/SECRET/stream`).

- `redact(text)`: every URI in `text` redacted by the rule above.
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
from urllib.parse import unquote

MASK = "***"

# Substrings of a parameter name that mark its value as a secret (rule 2 of the module docstring):
# ?password=, &pwd=, &loginpas= (Foscam), passphrase= (SRT), token/key/sig (cloud relays, HLS, S3/GCS/Azure
# pre-signed URLs: X-Amz-Signature, X-Goog-Credential, sig=), session ids, JWTs.
SECRET_STEMS = ("pas", "pwd", "secret", "token", "auth", "key", "sig", "cred", "sess", "jwt", "cookie",
                "bearer", "priv", "hmac")
# Short names that are secrets only as a whole name (as substrings they would match everything).
SECRET_NAMES = frozenset({"p", "pw", "pin", "psk", "otp", "sid", "code", "hash", "ticket", "nonce"})

_PARAM = re.compile(r"([?&;#])([^=&;#?\s]+)(=)([^&;#\s]*)")          # in free text: a space ends it
_PARAM_WHOLE = re.compile(r"([?&;#])([^=&;#?]+)(=)([^&;#]*)")           # one whole URI: spaces belong to it
_URI = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#]*)([^\s]*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def is_secret_name(name: str) -> bool:
    """Whether a query/fragment parameter called `name` holds a credential (the module's rule 2)."""
    n = unquote(name).strip().lower()
    return n in SECRET_NAMES or any(stem in n for stem in SECRET_STEMS)


def _mask_params(rest: str, pattern: re.Pattern) -> str:
    def one(m: re.Match) -> str:
        sep, name, value = m.group(1), m.group(2), m.group(4)
        if is_secret_name(name):
            return f"{sep}{name}={MASK}" if value else m.group(0)
        # a harmless value may carry another URI or '?token=' (a redirect target): redact inside it too
        return f"{sep}{name}=" + pattern.sub(one, redact(value))
    return pattern.sub(one, rest)


def _mask_authority(authority: str) -> str:
    if "@" not in authority:
        return authority
    return MASK + "@" + authority.rsplit("@", 1)[1]         # rule 1: the whole userinfo, always


def _mask_uri(scheme: str, authority: str, rest: str, whole: bool = False) -> str:
    path, hash_, fragment = rest.partition("#")
    if hash_ and fragment and "=" not in fragment:
        rest = f"{path}#{MASK}"                     # rule 3: a bare fragment
    return scheme + _mask_authority(authority) + _mask_params(rest, _PARAM_WHOLE if whole else _PARAM)


def redact(text: str) -> str:
    """Every `scheme://…` in `text` with its userinfo and its credential-like parameter values masked."""
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
    return _mask_uri(m.group(1), m.group(2), m.group(3), whole=True)


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
