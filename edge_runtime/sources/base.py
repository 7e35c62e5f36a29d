"""The source interface: something that yields BGR frames.

A source is opened, read frame by frame, and closed. `read()` returns a Frame, None at the end of a
finite source, or raises SourceLost when a live source glitches (the capture thread then reopens it
with backoff). Opening a source that cannot work at all raises SourceError (exit code 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_runtime.util.errors import SourceError
from edge_runtime.util.redact import display_uri, printable


@dataclass
class Frame:
    image: np.ndarray | None  # BGR uint8, HxWx3 (other shapes are normalised or refused by preprocess);
                              # None once preprocessed if no sink wants images
    index: int               # source frame number, 0-based
    ts: float                # capture time, unix seconds
    mono: float              # capture time, time.perf_counter(), for latency
    path: str | None = None  # for image folders


class SourceLost(Exception):
    """A live source failed or stalled; it will be reopened."""


class SkipFrame(Exception):
    """One bad item (an unreadable image in a folder); counted and skipped, the source goes on."""


class Source:
    """Base class. Subclasses set `live` and implement open/read/close."""

    live = False          # live sources: newest frame wins, drops are counted, glitches are retried
    kind = "source"

    def __init__(self, uri: str):
        self.uri = display_uri(uri)     # shown everywhere (logs, records, MQTT, HTTP): no password
        self._index = 0

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.uri

    def _frame(self, image: np.ndarray, path: str | None = None) -> Frame:
        frame = Frame(image=image, index=self._index, ts=time.time(), mono=time.perf_counter(),
                      path=None if path is None else printable(path))   # a non-UTF-8 name: valid JSON still
        self._index += 1
        return frame


__all__ = ["Frame", "Source", "SourceError", "SourceLost", "SkipFrame"]
