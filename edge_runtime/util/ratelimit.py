"""Warnings that can repeat (a broken file on every pass, a flapping broker, a model emitting NaN)
are rate-limited by time: the first is logged, then at most one per interval, with the number
suppressed meanwhile. A journal on a Pi's SD card must not fill with one message."""

from __future__ import annotations

import logging
import threading
import time


class RateLimited:
    """`warn(logger, fmt, *args)`: logs now, or counts and stays quiet until `interval` s have passed."""

    def __init__(self, interval: float = 60.0, clock=time.monotonic):
        self.interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def ready(self) -> int | None:
        """None: stay quiet (counted). Otherwise the number suppressed since the last message."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return None
            self._next = now + self.interval
            n, self._suppressed = self._suppressed, 0
            return n

    def log(self, logger: logging.Logger, level: int, fmt: str, *args) -> bool:
        n = self.ready()
        if n is None:
            return False
        if n:
            fmt += " (%d more like this since the last one not shown)"
            args = (*args, n)
        logger.log(level, fmt, *args)
        return True

    def warn(self, logger: logging.Logger, fmt: str, *args) -> bool:
        return self.log(logger, logging.WARNING, fmt, *args)
