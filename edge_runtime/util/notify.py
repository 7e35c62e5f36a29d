"""systemd's notify protocol (sd_notify) over the `NOTIFY_SOCKET` datagram socket, no dependency.

The unit is `Type=notify` with `WatchdogSec=`: the daemon says `READY=1` once the model is loaded
and the first frame is in, `WATCHDOG=1` from its main loop (a hung capture or inference then stops
the pings and systemd restarts it), `STATUS=` with its current rate, and `STOPPING=1` on shutdown.

Without systemd (`NOTIFY_SOCKET` unset) every method is a cheap no-op. No method ever raises: a
socket that vanished or refuses must not take the daemon down, so the first failure is logged at
debug level and the rest are dropped quietly.

Protocol facts followed here (sd_notify(3), sd_watchdog_enabled(3)):
- `NOTIFY_SOCKET` is a filesystem path, or `@name` for an abstract socket (leading NUL byte).
- `WATCHDOG_USEC` is the watchdog timeout in microseconds; ping at about half of it. When
  `WATCHDOG_PID` is set and is not our PID, the watchdog is meant for another process: no pings.
- One datagram per message, newline-separated `KEY=value` assignments.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ):
        address = environ.get("NOTIFY_SOCKET") or ""
        self._address: str | bytes | None = None
        if address.startswith("@"):
            self._address = b"\0" + address[1:].encode()      # abstract namespace (Linux)
        elif address.startswith("/"):
            self._address = address
        elif address:
            log.debug("NOTIFY_SOCKET=%r is neither a path nor @abstract; notifications off", address)
        self.enabled: bool = self._address is not None
        self.watchdog_interval: float | None = _watchdog_interval(environ) if self.enabled else None
        self._socket: socket.socket | None = None
        self._failed = False
        self._last_ping = float("-inf")
        self._lock = threading.Lock()
        self._stopping = False

    # -- the API the daemon calls -------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """READY=1 (and STATUS= when given): startup is finished."""
        if self.enabled:
            self._send("READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}")
            self._last_ping = time.monotonic()     # READY also shows we are alive

    def watchdog(self) -> None:
        """WATCHDOG=1, at most once per `watchdog_interval`: cheap enough to call every frame."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping < self.watchdog_interval:
            return
        self._last_ping = now
        self._send("WATCHDOG=1", unless_stopping=True)

    def status(self, text: str) -> None:
        """STATUS=text: shown by `systemctl status`."""
        if self.enabled:
            self._send(f"STATUS={_one_line(text)}")

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC (systemd 253+ wants it): a reload has begun; ready() ends it."""
        if self.enabled:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        if self.enabled:
            self._stopping = True    # a lane finishing its last frame must not ping after this
            self._send("STOPPING=1")

    # -- internals -----------------------------------------------------------------------------

    def _send(self, message: str, unless_stopping: bool = False) -> None:
        with self._lock:
            if self._failed or (unless_stopping and self._stopping):
                return
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(message.encode(), self._address)
            except (OSError, ValueError) as exc:
                # Only the first failure is logged; after it, stay quiet and cheap.
                self._failed = True
                log.debug("systemd notification %r failed (%s); further notifications are dropped",
                          message.split("\n", 1)[0], exc)
                self.close()

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n"))
