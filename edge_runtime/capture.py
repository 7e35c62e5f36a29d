"""The capture thread: source -> preprocess -> handoff to the inference loop.

Capture and preprocessing run beside inference (onnxruntime releases the GIL), into a small pool
of preallocated input tensors. Two handoff modes:
- live sources: the newest frame wins. A prepared frame the inference loop has not taken yet is
  replaced by a newer one and counted as dropped, so inference never works on a stale frame.
- files, folders, unthrottled synthetic: a short blocking queue, every frame processed.

A live source that fails is closed and reopened with exponential backoff; each loss and each
recovery is logged once and counted. A capture that blocks past the stall timeout is abandoned
by the inference loop, which starts a fresh capture thread (see Pipeline).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from .errors import UserError
from .preprocess import FrameError, Preprocessor
from .sources import Frame, SkipFrame, Source, SourceLost
from .stats import Stats

log = logging.getLogger(__name__)

POOL_SIZE = 3   # one in inference, one waiting, one being written


class Handoff:
    """Prepared frames from the capture thread to the inference loop, with a tensor pool."""

    def __init__(self, buffers: list[np.ndarray], latest: bool, stats: Stats):
        self._cond = threading.Condition()
        self._free = list(buffers)
        self._items: deque[tuple[Frame, np.ndarray, float]] = deque()
        self.latest = latest
        self._stats = stats
        self._depth = 1 if latest else len(buffers) - 1
        self.finished = False
        self.error: BaseException | None = None

    def acquire(self, stop: threading.Event) -> np.ndarray | None:
        with self._cond:
            while not self._free:
                if self.latest and self._items:
                    self._drop_oldest()
                    continue
                if stop.is_set():
                    return None
                self._cond.wait(0.1)
            return self._free.pop()

    def give_back(self, tensor: np.ndarray) -> None:
        with self._cond:
            self._free.append(tensor)
            self._cond.notify_all()

    def put(self, item: tuple[Frame, np.ndarray, float], stop: threading.Event) -> None:
        with self._cond:
            if self.latest:
                while self._items:
                    self._drop_oldest()
            else:
                while len(self._items) >= self._depth and not stop.is_set():
                    self._cond.wait(0.1)
            self._items.append(item)
            self._cond.notify_all()

    def _drop_oldest(self) -> None:
        _, tensor, _ = self._items.popleft()
        self._free.append(tensor)
        self._stats.add("frames_dropped")

    def get(self, timeout: float) -> tuple[Frame, np.ndarray, float] | None:
        with self._cond:
            if not self._items and not self.finished:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return None

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.finished = True
            self.error = error
            self._cond.notify_all()

    def drained(self) -> bool:
        with self._cond:
            return self.finished and not self._items


class CaptureThread(threading.Thread):
    def __init__(self, make_source: Callable[[], Source], preprocessor: Preprocessor, handoff: Handoff,
                 stats: Stats, stop: threading.Event, *, reconnect_initial: float = 0.5,
                 reconnect_max: float = 30.0, generation: int = 0):
        super().__init__(name=f"capture-{generation}", daemon=True)
        self.make_source = make_source
        self.pre = preprocessor
        self.handoff = handoff
        self.stats = stats
        self.stop_event = stop
        self.abandoned = threading.Event()   # set by the inference loop when this thread stalled
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.last_frame_mono = time.perf_counter()
        self.connected = False
        self.lost_since: float | None = None
        self.lost_reason = ""
        self._warned_frames = 0

    def _should_stop(self) -> bool:
        return self.stop_event.is_set() or self.abandoned.is_set()

    def run(self) -> None:
        source = self.make_source()
        try:
            self._run(source)
        except BaseException as exc:  # hand any surprise to the main thread instead of dying silently
            if not self.abandoned.is_set():
                self.handoff.finish(exc)
        finally:
            try:
                source.close()
            except Exception as exc:
                log.debug("closing %s: %s", source.uri, exc)

    def _connect(self, source: Source) -> bool:
        """Open the source; for live sources retry with backoff until it works or we stop."""
        delay = self.reconnect_initial
        while not self._should_stop():
            try:
                source.open()
                return True
            except SourceLost as exc:
                if not source.live:
                    raise UserError(str(exc)) from None
                self._mark_lost(str(exc))
                log.debug("%s: retrying in %.1f s", source.uri, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
        return False

    def _mark_lost(self, reason: str) -> None:
        if self.lost_since is None:
            self.lost_since = time.perf_counter()
            self.lost_reason = reason
            self.stats.add("source_losses")
            log.warning("source lost: %s; reconnecting with backoff (up to %.0f s apart)", reason,
                        self.reconnect_max)

    def _run(self, source: Source) -> None:
        if not self._connect(source):
            return
        self.connected = True
        self._mark_recovered(source)
        while not self._should_stop():
            try:
                frame = source.read()
            except SkipFrame as exc:
                self._skip(str(exc))
                continue
            except SourceLost as exc:
                self.connected = False
                self._mark_lost(str(exc))
                source.close()
                if not self._connect(source):
                    return
                self.connected = True
                self._mark_recovered(source)
                continue
            if self._should_stop():
                return
            if frame is None:
                self.handoff.finish()
                return
            self.last_frame_mono = time.perf_counter()
            self.stats.captured()
            tensor = self.handoff.acquire(self.stop_event)
            if tensor is None:
                return
            t0 = time.perf_counter()
            try:
                self.pre(frame.image, tensor)
            except FrameError as exc:
                self.handoff.give_back(tensor)
                self._skip(f"frame {frame.index}: {exc}")
                continue
            pre_ms = (time.perf_counter() - t0) * 1000.0
            self.handoff.put((frame, tensor, pre_ms), self.stop_event)

    def _mark_recovered(self, source: Source) -> None:
        if self.lost_since is not None:
            down = time.perf_counter() - self.lost_since
            self.stats.add("source_reconnects")
            log.warning("source recovered: %s is back after %.1f s", source.uri, down)
            self.lost_since = None
        self.last_frame_mono = time.perf_counter()

    def _skip(self, message: str) -> None:
        self.stats.add("frames_skipped")
        self._warned_frames += 1
        # Warn for the first few, then every 100th: a folder of 10 000 broken files must not flood the journal.
        if self._warned_frames <= 5 or self._warned_frames % 100 == 0:
            log.warning("skipped: %s (%d skipped so far)", message, self._warned_frames)
