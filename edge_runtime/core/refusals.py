"""Frames refused in a row (the model's output NaN or infinity): said once, then tried ever less often.

A model whose output is non-finite for every frame used to be run flat out forever: 200 % CPU, nothing
published, and `--max-frames` never reached, since only published frames count towards it. The start-up
check catches a model that fails on a blank image; this catches one that fails on every real frame.

- After `BACKOFF_AFTER` frames refused in a row, one warning says so, and each lane pauses before its
  next frame: 0.25 s doubling to 2 s (the pause of a folder where nothing decodes). The first frame
  that passes again ends the pause, with one line saying how many were refused.
- `--max-frames N`: N frames refused in a row end the run: the user asked for a bounded run, and the N
  frames it may take have all been refused. The run stops with one error line and exits 2 (the model or
  its description is wrong); its final stats line is still printed. Frames refused now and then, with
  frames passing between, do not end it: N published frames still do.
"""

from __future__ import annotations

import logging
import threading

from edge_runtime.util.ratelimit import RateLimited

log = logging.getLogger("edge_runtime.core.pipeline")

BACKOFF_AFTER = 25          # about a second of a camera: a short burst of bad frames is not a pattern
PAUSE_INITIAL = 0.25
PAUSE_MAX = 2.0


class RefusalStreak:
    def __init__(self, stop: threading.Event, max_frames: int | None):
        self.stop = stop
        self.max_frames = max_frames
        self.in_a_row = 0
        self.first_index: int | None = None
        self.pause = 0.0
        self.gave_up: str | None = None     # the error line when max_frames refused frames ended the run
        self._lock = threading.Lock()
        self._said = RateLimited(60.0)      # a model that flaps (25 refused, 1 passes, ...) is said once a minute

    def refused(self, index: int, why: Exception) -> None:
        with self._lock:
            self.in_a_row += 1
            if self.first_index is None:
                self.first_index = index
            n = self.in_a_row
            if self.max_frames is not None and n >= self.max_frames and self.gave_up is None:
                self.gave_up = (f"stopping: the last {n} frame(s) (from frame {self.first_index}) were all refused "
                                f"({why}), as many as --max-frames {self.max_frames} allows; nothing was "
                                "published. Check the model and its description's mean/std/output_scale")
                self.stop.set()
                return
            if n == BACKOFF_AFTER:
                self._said.warn(log, "every frame since frame %d is refused (%s): trying one frame every %g s, up to "
                                "every %g s, until one passes", self.first_index, why, PAUSE_INITIAL, PAUSE_MAX)
            if n >= BACKOFF_AFTER:
                self.pause = PAUSE_INITIAL if self.pause == 0 else min(PAUSE_MAX, 2 * self.pause)

    def passed(self, index: int) -> None:
        if self.in_a_row == 0:          # the common case: no lock
            return
        with self._lock:
            if self.in_a_row >= BACKOFF_AFTER:
                log.info("frame %d passes again after %d refused frames; back to full speed", index, self.in_a_row)
            self.in_a_row, self.first_index, self.pause = 0, None, 0.0

    def wait(self) -> None:
        """A lane's pause before its next frame while every frame is refused (returns at once on stop)."""
        pause = self.pause
        if pause:
            self.stop.wait(pause)
