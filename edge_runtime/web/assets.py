"""The live page's files (web/static/: live.html, live.css, live.js), served from the package.

The page is plain files, no bundler and no CDN (the device may be offline), so it can carry a strict
Content-Security-Policy: scripts and styles only from this server, no inline script, no eval, images from
this server (and the `data:` blank the page shows while its tab is hidden), requests only to this server,
no framing. The page builds its DOM with textContent (labels and region names are data, never markup):
with the CSP, an injected string can neither run nor load anything. `form-action` is left out on purpose:
the page posts with fetch, and the rule would only matter for a form another script added.

Files are read once, on first use, and served from memory: the set is fixed (ROUTES), so no request
path ever reaches the file system.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8"}
ROUTES = {"/": "live.html", "/index.html": "live.html", "/static/live.css": "live.css",
          "/static/live.js": "live.js"}


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def route(path: str) -> tuple[int, bytes, str, dict] | None:
    """(status, body, content type, headers) for the page's own paths; None for any other path."""
    name = ROUTES.get(path)
    if name is None:
        return None
    try:
        body = _read(name)
    except OSError as exc:          # a broken install: say so (an OSError in a handler reads as a gone client)
        log.error("http: the page's file %s cannot be read: %s", STATIC / name, exc.strerror or exc)
        return 500, f"the page's file {name} is missing from the installation\n".encode(), "text/plain", {}
    return 200, body, TYPES[Path(name).suffix], HEADERS
