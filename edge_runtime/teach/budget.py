"""How many pictures the live page may still save into a dataset folder: per label and in total.

`POST /collect` wrote 2000 pictures in 8 s, each counted by listing its folder under a global lock.
Here the folder is listed once (the first save after start), the counts are then kept in memory and
updated by every save, and a save beyond `per_label` or `total` is refused before anything is encoded
or written. Pictures removed by hand are noticed when a bound is reached: the label's folder (or, for
the total, the dataset) is listed again then, at most once every RESCAN_EVERY_S seconds. A rate bound
(RATE_PER_S, with a burst of as many) refuses a flood before it costs a JPEG encoding each.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

RESCAN_EVERY_S = 10.0
RATE_PER_S = 10             # a person clicking "save" does not reach it; a script looping on the URL does


class Refused(Exception):
    """A save beyond a bound: `status` (507 full, 429 too fast) and a one-line reason for the JSON error."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def _count(folder: Path) -> int:
    """Pictures (*.jpg, not hidden) in one label folder, without following a link."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.endswith(".jpg") and not e.name.startswith(".")
                       and e.is_file(follow_symlinks=False))
    except OSError:
        return 0


class SaveBudget:
    def __init__(self, root: str | os.PathLike, per_label: int, total: int, clock=time.monotonic):
        self.root = Path(root).expanduser()
        self.per_label = per_label
        self.total = total
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] | None = None
        self._sum = 0
        self._rescanned: dict[str, float] = {}
        self._tokens = float(RATE_PER_S)
        self._refilled = clock()

    def _scan(self) -> None:
        counts: dict[str, int] = {}
        try:
            with os.scandir(self.root) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                        counts[e.name] = _count(Path(e.path))
        except OSError:
            pass                    # no dataset folder yet: nothing in it
        self._counts, self._sum = counts, sum(counts.values())

    def _rescan_once(self, key: str, what) -> bool:
        """List again (a user may have removed pictures), at most once every RESCAN_EVERY_S per key."""
        now = self._clock()
        if now - self._rescanned.get(key, float("-inf")) < RESCAN_EVERY_S:
            return False
        self._rescanned[key] = now
        what()
        return True

    def _rescan_label(self, label: str) -> None:
        n = _count(self.root / label)
        self._sum += n - self._counts.get(label, 0)
        self._counts[label] = n

    def reserve(self, label: str) -> int:
        """Room for one more picture of `label`: taken now (the count it will be), or Refused."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(RATE_PER_S), self._tokens + (now - self._refilled) * RATE_PER_S)
            self._refilled = now
            if self._tokens < 1.0:
                raise Refused(429, f"more than {RATE_PER_S} saves a second; wait a moment")
            if self._counts is None:
                self._scan()
            if self._counts.get(label, 0) >= self.per_label and not (
                    self._rescan_once(label, lambda: self._rescan_label(label))
                    and self._counts.get(label, 0) < self.per_label):
                raise Refused(507, f"label {label!r} has {self._counts[label]} pictures, the most "
                                   f"http.collect_max_per_label ({self.per_label}) allows; nothing saved")
            if self._sum >= self.total and not (self._rescan_once("", self._scan) and self._sum < self.total):
                raise Refused(507, f"the dataset has {self._sum} pictures, the most http.collect_max_total "
                                   f"({self.total}) allows; nothing saved")
            self._tokens -= 1.0
            self._counts[label] = self._counts.get(label, 0) + 1
            self._sum += 1
            return self._counts[label]

    def release(self, label: str) -> None:
        """A reserved picture that was not written after all."""
        with self._lock:
            if self._counts and self._counts.get(label, 0) > 0:
                self._counts[label] -= 1
                self._sum -= 1
