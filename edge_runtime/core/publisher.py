"""Finished frames to the sinks: one record per frame, strictly in frame order, until max_frames.

Lanes finish frames out of order (two sessions side by side). Each lane leaves its results here and
goes on to its next frames; whoever finishes the oldest outstanding frame publishes everything that
is now in order. (Lanes that waited for their turn fell into lockstep, their Python work colliding
on the GIL: measured slower.) Run-ahead is bounded, so a stuck lane also stops the others, and the
watchdog then stops being fed.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

from edge_runtime.watch.events import FRAME_REGION
from edge_runtime.util.notify import Notifier
from edge_runtime.core.sink import Sink
from edge_runtime.sources import Frame
from edge_runtime.core.stats import Stats

# (frame, top-k list, preprocess ms, inference ms of its session.run, frames in that run) of a usable
# frame; None for a refused one. With regions, the top-k is a dict: region name -> top-k list (one
# record per region).
Result = tuple[Frame, list | dict, float, float, int] | None


class Publisher:
    def __init__(self, sinks: Sequence[Sink], stats: Stats, notifier: Notifier, stop: threading.Event,
                 source_uri: str, max_frames: int | None, watch=None, untrained: bool = False):
        self.sinks = list(sinks)
        self.watch = watch                      # watch.Watch: states and events, fed here in frame order
        self.stats = stats
        self.notifier = notifier
        self.stop = stop
        self.source_uri = source_uri
        self.max_frames = max_frames
        self.untrained = untrained              # said in every record: its labels mean nothing
        self.cond = threading.Condition()       # sinks are called by one thread at a time, under it
        self._next_seq = 0                      # order of frames as read
        self._pending: dict[int, Result] = {}   # finished frames waiting for an earlier one
        self._next_publish = 0                  # the frame the sinks get next
        self.processed = 0
        self.last_processed_mono: float | None = None

    # -- for the lanes --

    def wait_for_room(self, ahead: int) -> None:
        """Wait while `ahead` frames are already in flight (another lane is stuck: do not run away from
        it), or while the frames in flight are all that max_frames still needs."""
        with self.cond:
            while (self._next_seq - self._next_publish >= ahead or self._still_needed() <= 0) \
                    and not self.stop.is_set():
                self.cond.wait(0.1)

    def wanted(self, batch: int) -> int | float:
        """How many frames to read now (at most `batch`). Called with the pipeline's read lock held."""
        with self.cond:
            return min(batch, self._still_needed())

    def reserve(self, n: int) -> int:
        """Sequence numbers for `n` frames just read (called with the read lock held: read order)."""
        seq = self._next_seq
        self._next_seq += n
        return seq

    def deliver(self, seq: int, results: list[Result]) -> None:
        """Results of frames seq, seq+1, ...; publishes every frame that is now in order."""
        with self.cond:
            for i, result in enumerate(results):
                self._pending[seq + i] = result
            try:
                while self._next_publish in self._pending:
                    item = self._pending.pop(self._next_publish)
                    self._next_publish += 1
                    if item is None or self.stop.is_set():
                        continue    # unusable frame, or stopped (max_frames too): only the final stats now
                    self._publish(*item)
            except BaseException:
                self.stop.set()     # nothing more reaches the sinks
                raise
            finally:
                self.cond.notify_all()

    # -- for the main thread --

    def publish_stats(self, final: bool = False) -> dict:
        line = self.stats.snapshot(final=final)
        for sink in self.sinks:
            sink.stats(line)
        self.notifier.status(f"{line['fps']['inference']:.1f} fps, {line['frames_processed']} frames, "
                             f"{line['frames_dropped']} dropped, {line['source_reconnects']} reconnects")
        return line

    # -- inside --

    def _record(self, frame: Frame, what: dict, latency: dict) -> dict:
        record = {"type": "prediction", "frame": frame.index, "ts": round(frame.ts, 6), "source": self.source_uri,
                  **what, "latency_ms": latency}
        if frame.path is not None:
            record["path"] = frame.path
        if self.untrained:
            record["untrained"] = True
        return record

    def _still_needed(self) -> int | float:
        """Frames to read before max_frames is reached, counting those in flight as good."""
        limit = self.max_frames
        return float("inf") if limit is None else limit - self.processed - (self._next_seq - self._next_publish)

    def _publish(self, frame: Frame, top: list | dict, pre_ms: float, inf_ms: float, batch: int) -> None:
        now = time.perf_counter()
        if isinstance(top, dict) and not top:
            self._gated(now)
            return
        total_ms = (now - frame.mono) * 1000.0
        latency = {"preprocess": round(pre_ms, 3), "inference": round(inf_ms, 3), "total": round(total_ms, 3)}
        if isinstance(top, dict):       # regions: the whole-frame record with "region" added, one each
            records = [self._record(frame, {"region": name, "top": t}, latency) for name, t in top.items()]
        else:
            records = [self._record(frame, {"top": top}, latency)]
        self.stats.processed(pre_ms, inf_ms, total_ms, batch)
        self.last_processed_mono = now
        self.processed += 1
        for sink in self.sinks:
            sink.frame_records(records, frame)
        if self.watch is not None:
            self.watch.frame_done(frame, top if isinstance(top, dict) else {FRAME_REGION: top})
        if self.processed == 1:
            self.notifier.ready(f"running on {self.source_uri}")
        self.notifier.watchdog()
        self._count_done()

    def _gated(self, now: float) -> None:
        """A frame the classify gate skipped whole (nothing changed): no record, every state stands, but
        the daemon is as alive as after a classified frame (health, watchdog) and max_frames counts it."""
        self.stats.add("frames_gated")
        self.last_processed_mono = now
        self.processed += 1
        if self.processed == 1:
            self.notifier.ready(f"running on {self.source_uri}")
        self.notifier.watchdog()
        self._count_done()

    def _count_done(self) -> None:
        if self.max_frames is not None and self.processed >= self.max_frames:
            # Everything asked for is out: stop lanes and capture now, or the frames the capture goes
            # on delivering until the main thread notices would be counted as dropped.
            self.stop.set()
