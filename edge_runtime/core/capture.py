"""The capture thread: source -> newest frame (live) or next frame (files) for the inference loop.

Capture runs beside inference (OpenCV releases the GIL while it decodes or waits on a camera).
Preprocessing happens in the lanes (pipeline.py), only for frames that are actually classified: on a
live camera most frames are dropped, and preparing them would be wasted CPU (measured, see
docs/BENCHMARKS.md). Two handoff modes:
- live sources: the newest frame wins. A frame the inference loop has not taken yet is replaced
  by a newer one and counted as dropped, so inference never works on a stale frame.
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
from typing import Callable, Protocol

from edge_runtime.util.errors import UserError
from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.sources import Frame, SkipFrame, Source, SourceLost
from edge_runtime.core.stats import Stats

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2   # frames read ahead for files: enough to overlap decoding with inference
STABLE_S = 30.0   # a live source that fails sooner after opening is reopened with a growing pause


class FrameFeed(Protocol):
    """Where the lanes take frames from: a Handoff (filled by a CaptureThread) or an InlineReader."""
    error: BaseException | None     # why the source ended, if it failed

    def get(self, timeout: float) -> Frame | None:
        """The next frame, or None: nothing yet (a live source), a skipped item, or the end."""

    def drained(self) -> bool:
        """The source has ended and every frame has been taken."""


class Handoff:
    """Frames from the capture thread to the lanes (a FrameFeed)."""

    def __init__(self, latest: bool, stats: Stats, depth: int = QUEUE_DEPTH):
        self._cond = threading.Condition()
        self._items: deque[Frame] = deque()
        self.latest = latest
        self._stats = stats
        self._depth = 1 if latest else depth
        self.finished = False
        self.error: BaseException | None = None

    def put(self, frame: Frame, stop: threading.Event) -> None:
        with self._cond:
            if self.latest:
                while self._items:
                    self._items.popleft()
                    self._stats.add("frames_dropped")
            else:
                while len(self._items) >= self._depth and not stop.is_set():
                    self._cond.wait(0.1)
            self._items.append(frame)
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._items and not self.finished:
                self._cond.wait(timeout)
            if self._items:
                frame = self._items.popleft()
                self._cond.notify_all()
                return frame
            return None

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.finished = True
            self.error = error
            self._cond.notify_all()

    def drained(self) -> bool:
        with self._cond:
            return self.finished and not self._items


class InlineReader:
    """Files, folders and unthrottled synthetic sources, read by the lanes themselves (one at a time).

    On a 2-core board onnxruntime's threads already use both cores; a reader thread only adds
    context switches and contention (measured: the threaded reader was slower, docs/BENCHMARKS.md).
    A FrameFeed, like Handoff."""

    def __init__(self, make_source: Callable[[], Source], stats: Stats):
        self.source = make_source()
        self.stats = stats
        self.finished = False
        self.error: BaseException | None = None
        self.source.open()

    def get(self, timeout: float) -> Frame | None:
        if self.finished:
            return None
        try:
            frame = self.source.read()
        except SkipFrame as exc:
            warn_skipped(self.stats, str(exc))
            return None
        if frame is None:
            self.finished = True
            return None
        self.stats.captured()
        return frame

    def drained(self) -> bool:
        return self.finished

    def close(self) -> None:
        self.source.close()


class CaptureThread(threading.Thread):
    def __init__(self, make_source: Callable[[], Source], handoff: Handoff,
                 stats: Stats, stop: threading.Event, *, reconnect_initial: float = 0.5,
                 reconnect_max: float = 30.0, generation: int = 0):
        super().__init__(name=f"capture-{generation}", daemon=True)
        self.make_source = make_source
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
        self._opened_at = 0.0       # when the source last opened
        self._flap_delay = 0.0      # the pause before reopening a source that failed soon after opening

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
                warn_skipped(self.stats, str(exc))
                continue
            except SourceLost as exc:
                self.connected = False
                self._mark_lost(str(exc))
                source.close()
                self._pause_if_flapping()
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
            self.handoff.put(frame, self.stop_event)

    def _mark_recovered(self, source: Source) -> None:
        if self.lost_since is not None:
            down = time.perf_counter() - self.lost_since
            self.stats.add("source_reconnects")
            log.warning("source recovered: %s is back after %.1f s", source.uri, down)
            self.lost_since = None
        self.last_frame_mono = self._opened_at = time.perf_counter()

    def _pause_if_flapping(self) -> None:
        """A source that opens and then fails at once (a stream server that hangs up, a clip served over
        HTTP that ends) must not be reopened in a tight loop (thousands of reconnects and log lines a
        minute): the pause doubles, up to reconnect_max, until a connection has lasted STABLE_S."""
        if time.perf_counter() - self._opened_at >= STABLE_S:
            self._flap_delay = 0.0
            return
        self._flap_delay = min(max(2 * self._flap_delay, self.reconnect_initial), self.reconnect_max)
        log.debug("source failed %.1f s after opening; reopening in %.1f s",
                  time.perf_counter() - self._opened_at, self._flap_delay)
        self.stop_event.wait(self._flap_delay)



def warn_skipped(stats: Stats, message: str) -> None:
    """Count a skipped frame; warn for the first few, then at most once every SKIP_LOG_S seconds (a
    folder of 10 000 broken files, looped, must not flood the journal)."""
    stats.add("frames_skipped")
    n = stats.frames_skipped
    if n <= 5:
        log.warning("skipped: %s (%d skipped so far)", message, n)
    else:
        _skip_log.warn(log, "skipped: %s (%d skipped so far)", message, n)


SKIP_LOG_S = 30.0
_skip_log = RateLimited(SKIP_LOG_S)
