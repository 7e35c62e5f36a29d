"""The data path in one place: source → preprocess → engine → postprocess → sinks.

Live sources are captured in a thread that keeps only the newest frame (capture.py); files,
folders and unthrottled synthetic sources are read by the lanes themselves.

A lane is one onnxruntime session with its own input tensor, run by its own thread: it takes the
next frames (a batch of up to N for files, folders and unthrottled synthetic; one for live sources),
preprocesses each into its slot of the tensor as it is read, runs inference once for the batch and
postprocesses. With two lanes of one thread each, one lane's Python work (reading, preprocessing,
publishing) runs while the other is in inference, so the cores do not sit idle between session.run
calls; a batch pays onnxruntime's per-operator overhead once for N frames (measured,
docs/BENCHMARKS.md). Predictions still reach the sinks one per frame, strictly in frame order: a
finished frame waits in a small reorder buffer for any earlier frame still in flight. Live sources
default to one lane with all threads and one frame per inference (lowest latency on the newest frame).

The main thread supervises: stats lines, stall detection of the capture thread, shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from .capture import CaptureThread, Handoff, InlineReader, warn_skipped
from .engine import Engine
from .errors import first_line
from .notify import Notifier
from .postprocess import NonFiniteOutput, Postprocessor, refuse
from .preprocess import FrameError, Preprocessor
from .sinks import OutputClosed, Sink
from .sources import Frame, Source
from .stats import Stats

log = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    top_k: int = 5
    max_frames: int | None = None
    stats_interval: float = 5.0
    stall_timeout: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    inline_reader: bool = True      # read files/folders in the inference loop instead of a thread
    batch: int = 1                  # frames per session.run for files, folders, unthrottled synthetic


class Lane:
    """One session, its own preprocessing buffer and postprocessor."""

    def __init__(self, engine: Engine, top_k: int, batch: int = 1):
        self.engine = engine
        self.batch = batch
        self.pre = Preprocessor(engine.spec.input)
        self.post = Postprocessor(engine.spec, top_k)
        self.tensor = self.pre.new_buffer(batch)    # reused for every batch this lane takes


class Pipeline:
    def __init__(self, make_source: Callable[[], Source], engine: Engine | Sequence[Engine], sinks: list[Sink],
                 options: PipelineOptions, stop: threading.Event | None = None,
                 notifier: Notifier | None = None, stats: Stats | None = None):
        engines = [engine] if isinstance(engine, Engine) else list(engine)
        self.make_source = make_source
        self.engine = engines[0]
        probe = make_source()
        self.live = probe.live
        # A live source's frame is classified as soon as it is the newest: never wait to fill a batch.
        self.batch = 1 if self.live else max(1, options.batch)
        self.lanes = [Lane(e, options.top_k, self.batch) for e in engines]
        self.sinks = sinks
        # Frames wait in flight and in the reorder buffer: their 0.9 MB images, when no sink looks at
        # them, are let go once preprocessed (a few MB of RSS with batches on a video, measured).
        self._keep_images = any(s.wants_images for s in sinks)
        self.options = options
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier({})
        self.stats = stats or Stats()
        self.source_uri = probe.uri
        self.inline = not self.live and options.inline_reader
        self.handoff: Handoff | InlineReader = Handoff(self.live, self.stats)
        self._generation = 0
        self.capture: CaptureThread | None = None
        self.last_record: dict | None = None
        self.last_processed_mono: float | None = None
        self.started_mono = time.perf_counter()
        self.error: BaseException | None = None
        self.output_closed = False
        self.processed = 0
        self._read_lock = threading.Lock()      # one lane reads the source at a time
        self._publish_lock = threading.Condition()   # sinks are called by one lane at a time
        self._next_seq = 0                      # order of frames as read
        self._pending: dict[int, tuple | None] = {}  # finished frames waiting for an earlier one
        self._next_publish = 0                  # the frame the sinks get next
        self._done = threading.Event()          # the source ended: lanes finish the frames in flight
        self._failure: BaseException | None = None

    def _start_capture(self) -> None:
        self._generation += 1
        self.capture = CaptureThread(self.make_source, self.handoff, self.stats, self.stop,
                                     reconnect_initial=self.options.reconnect_initial,
                                     reconnect_max=self.options.reconnect_max, generation=self._generation)
        self.capture.start()

    def _check_stall(self) -> None:
        """A live capture blocked inside read() longer than the stall timeout: abandon it, start afresh."""
        cap = self.capture
        if cap is None or not self.live or not cap.connected:
            return
        silent = time.perf_counter() - cap.last_frame_mono
        if silent > self.options.stall_timeout:
            log.warning("source stalled: no frame from %s for %.1f s; reopening", self.source_uri, silent)
            cap.abandoned.set()
            cap.connected = False
            self.stats.add("source_losses")
            self.stats.add("source_reconnects")
            self._start_capture()

    def _publish_stats(self, final: bool = False) -> dict:
        line = self.stats.snapshot(final=final)
        for sink in self.sinks:
            sink.stats(line)
        self.notifier.status(f"{line['fps']['inference']:.1f} fps, {line['frames_processed']} frames, "
                             f"{line['frames_dropped']} dropped, {line['source_reconnects']} reconnects")
        return line

    def run(self) -> int:
        """Run until the source ends, max_frames, a stop signal or a closed output. Returns frames processed."""
        opts = self.options
        if self.inline:
            self.handoff = InlineReader(self.make_source, self.stats)
        else:
            self._start_capture()
        threads = [threading.Thread(target=self._lane_loop, args=(lane,), name=f"lane-{i}", daemon=True)
                   for i, lane in enumerate(self.lanes)]
        next_stats = time.perf_counter() + opts.stats_interval
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                self.stop.wait(0.1)
                if self.stop.is_set():
                    break
                self._check_stall()
                now = time.perf_counter()
                if now >= next_stats:
                    next_stats = now + opts.stats_interval
                    with self._publish_lock:
                        self._publish_stats()
            self._raise_failure()
        except OutputClosed:
            log.info("output closed by its reader; stopping")
            self.output_closed = True
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.stop.set()
            self.notifier.stopping()
            for t in threads:
                # A lane finishes the frame in flight; SIGTERM must still exit within 2 s.
                t.join(timeout=1.5 / len(threads))
            if self.capture is not None:
                # Let it close the source: native capture code still running at interpreter exit aborts.
                self.capture.join(timeout=1.5)
            if isinstance(self.handoff, InlineReader) and self._read_lock.acquire(timeout=1.0):
                try:
                    self.handoff.close()
                finally:
                    self._read_lock.release()
        return self.processed

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            raise failure

    def _lane_loop(self, lane: Lane) -> None:
        # Frames read but not yet published: every lane's batch in flight plus one more batch, so a lane
        # that finishes first goes on; beyond that it waits (a stuck lane stops the others too).
        ahead = max(2 * len(self.lanes), (len(self.lanes) + 1) * lane.batch)
        try:
            while not self.stop.is_set() and not self._done.is_set():
                with self._publish_lock:
                    # Wait while another lane is stuck (do not run away from it), or while the frames
                    # in flight are all that max_frames still needs.
                    while (self._next_seq - self._next_publish >= ahead or self._still_needed() <= 0) \
                            and not self.stop.is_set():
                        self._publish_lock.wait(0.1)
                with self._read_lock:
                    with self._publish_lock:    # a consistent count (lock order: read, then publish)
                        want = min(lane.batch, self._still_needed())
                    if self._done.is_set() or self.stop.is_set():
                        return
                    if want <= 0:
                        continue
                    frames, usable = self._read(lane, want)
                    if not frames:
                        if self._done.is_set():
                            if self.handoff.error is not None:
                                raise self.handoff.error
                            return
                        self.notifier.watchdog()    # waiting for a live source is healthy
                        continue
                    seq = self._next_seq
                    self._next_seq += len(frames)
                self._process(lane, frames, usable, seq)
            if self._done.is_set() and self.handoff.error is not None:
                raise self.handoff.error
        except BaseException as exc:  # hand it to the main thread, stop the others
            if self._failure is None:
                self._failure = exc
            self.stop.set()

    def _still_needed(self) -> int | float:
        """Frames to read before max_frames is reached, counting those in flight as good."""
        limit = self.options.max_frames
        return float("inf") if limit is None else limit - self.processed - (self._next_seq - self._next_publish)

    def _read(self, lane: Lane, want: int) -> tuple[list[Frame], list[tuple[int, float]]]:
        """Up to `want` frames (fewer at the end of the source or a skipped item), each preprocessed into
        the lane's tensor as soon as it is read: a frame just decoded is still in the CPU's cache, and
        its image can be let go at once. Returns the frames and the (slot, preprocessing ms) of the
        usable ones; a refused frame's slot is run but not used. Called with the read lock held."""
        frames: list[Frame] = []
        usable: list[tuple[int, float]] = []
        while len(frames) < want:
            frame = self.handoff.get(timeout=0.25)
            if frame is None:
                if self.handoff.drained():
                    self._done.set()
                break
            slot = len(frames)
            frames.append(frame)
            t0 = time.perf_counter()
            try:
                lane.pre(frame.image, lane.tensor[slot:slot + 1])
            except FrameError as exc:
                warn_skipped(self.stats, f"frame {frame.index}: {exc}")
                continue
            usable.append((slot, (time.perf_counter() - t0) * 1000.0))
            if not self._keep_images:
                frame.image = None
        return frames, usable

    def _process(self, lane: Lane, frames: list[Frame], usable: list[tuple[int, float]], seq: int) -> None:
        """inference (one session.run for the batch) → postprocess in this lane, then to the sinks in
        frame order."""
        results: list[tuple | None] = [None] * len(frames)
        if usable:
            t1 = time.perf_counter()
            outputs = lane.engine.run_batch(lane.tensor[:len(frames)])
            inf_ms = (time.perf_counter() - t1) * 1000.0    # each frame of the batch waited for the whole run
            for i, pre_ms in usable:
                try:
                    results[i] = (frames[i], lane.post.top(outputs[i]), pre_ms, inf_ms)
                except NonFiniteOutput as exc:      # NaN/inf: never published (JSON has no NaN)
                    refuse(self.stats, frames[i].index, exc)
        # A lane never waits for its turn: it leaves its results and goes on to the next frames;
        # whoever finishes the oldest outstanding frame publishes everything that is now in order.
        # (Waiting put the lanes in lockstep, their Python work colliding on the GIL: measured slower.)
        with self._publish_lock:
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
                self._publish_lock.notify_all()

    def _publish(self, frame: Frame, top: list, pre_ms: float, inf_ms: float) -> None:
        now = time.perf_counter()
        total_ms = (now - frame.mono) * 1000.0
        record = {"type": "prediction", "frame": frame.index, "ts": round(frame.ts, 6),
                  "source": self.source_uri, "top": top,
                  "latency_ms": {"preprocess": round(pre_ms, 3), "inference": round(inf_ms, 3),
                                 "total": round(total_ms, 3)}}
        if frame.path is not None:
            record["path"] = frame.path
        self.stats.processed(pre_ms, inf_ms, total_ms)
        self.last_record = record
        self.last_processed_mono = now
        self.processed += 1
        for sink in self.sinks:
            sink.prediction(record, frame)
        if self.processed == 1:
            self.notifier.ready(f"running on {self.source_uri}")
        self.notifier.watchdog()
        limit = self.options.max_frames
        if limit is not None and self.processed >= limit:
            # Everything asked for is out: stop lanes and capture now, or the frames the capture goes
            # on delivering until the main thread notices would be counted as dropped.
            self.stop.set()

    def source_connected(self) -> bool:
        if self.inline:
            return isinstance(self.handoff, InlineReader) and not self.handoff.finished
        return bool(self.capture is not None and self.capture.connected)

    def health(self, unhealthy_after: float = 30.0) -> dict:
        """For /healthz: healthy while frames flow; the reason when the source is lost or frames
        stopped for longer than `unhealthy_after` seconds, or the pipeline stopped (error or shutdown)."""
        now = time.perf_counter()
        cap = self.capture
        last = self.last_processed_mono
        age = None if last is None else now - last
        lost_for = None if cap is None or cap.lost_since is None else now - cap.lost_since
        status, reason = "ok", None
        if self.error is not None:
            first = first_line(self.error)
            status, reason = "error", f"the pipeline stopped with an error: {type(self.error).__name__}: {first}"
        elif self.stop.is_set():
            status, reason = "stopped", "the pipeline has stopped"
        else:
            waited = now - self.started_mono
            stale = (age is None and waited > unhealthy_after) or (age is not None and age > unhealthy_after)
            if lost_for is not None and (lost_for > unhealthy_after or stale):
                status, reason = "source_lost", f"source lost for {lost_for:.1f} s: {cap.lost_reason}"
            elif stale and age is None:
                status, reason = "no_frames", f"no frame processed in the {waited:.0f} s since start"
            elif stale:
                status, reason = "stalled", f"no frame processed for {age:.0f} s"
            elif age is None:
                status = "starting"
        return {"healthy": reason is None, "status": status, "reason": reason,
                "source_connected": self.source_connected(),
                "last_frame_age_s": None if age is None else round(age, 3),
                "source_lost_for_s": None if lost_for is None else round(lost_for, 3),
                "frames_processed": self.stats.frames_processed}

    def finish(self) -> dict | None:
        """Final stats line to every sink (after run), then close them."""
        line = None
        try:
            line = self._publish_stats(final=True)
        except OutputClosed:
            self.output_closed = True
        for sink in self.sinks:
            try:
                sink.close()
            except OutputClosed:
                self.output_closed = True
            except Exception as exc:  # one sink failing to close must not hide the others
                log.warning("closing %s: %s", sink.name, exc)
        return line
