"""synthetic://WIDTHxHEIGHT[?fps=F]: a moving colour test pattern, no camera needed.

Each frame is a window into a precomputed canvas twice as wide, so generating a frame costs
nothing: benchmarks measure the pipeline, not the pattern. With fps it behaves like a live camera
(paced, newest frame wins); without, it is unthrottled and processed frame by frame.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge_runtime.util.errors import SourceError
from .base import Frame, Source


def _canvas(width: int, height: int) -> np.ndarray:
    # Colour bars plus a diagonal gradient and some circles: varied enough to exercise resize.
    canvas = np.zeros((height, 2 * width, 3), dtype=np.uint8)
    bars = [(255, 255, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255),
            (255, 0, 0), (0, 0, 0)]
    bar_w = max(1, width // len(bars))
    for i, colour in enumerate(bars * 2):
        canvas[:, i * bar_w:(i + 1) * bar_w] = colour
    ramp = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    canvas[height // 2:] = (canvas[height // 2:] * 0.5 + ramp[height // 2:] * 0.5).astype(np.uint8)
    for i in range(6):
        cx = (i * 2 * width) // 6 + width // 12
        cv2.circle(canvas, (cx, height // 3), max(4, height // 8), (40 * i, 255 - 40 * i, 128), -1)
    return canvas


def parse_size(text: str, uri: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SourceError(f"{uri}: expected synthetic://WIDTHxHEIGHT, e.g. synthetic://640x480") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise SourceError(f"{uri}: width and height must be between 8 and 8192")
    return w, h


class SyntheticSource(Source):
    kind = "synthetic"

    def __init__(self, uri: str, width: int, height: int, fps: float | None):
        super().__init__(uri)
        self.width, self.height, self.fps = width, height, fps
        self.live = fps is not None
        self._canvas: np.ndarray | None = None
        self._next_due = 0.0

    def open(self) -> None:
        self._canvas = _canvas(self.width, self.height)
        self._next_due = time.perf_counter()

    def read(self) -> Frame | None:
        assert self._canvas is not None, "open() first"
        if self.fps:
            self._next_due += 1.0 / self.fps
            delay = self._next_due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                self._next_due = time.perf_counter()   # fell behind: do not burst to catch up
        offset = (self._index * 4) % self.width
        return self._frame(self._canvas[:, offset:offset + self.width])
