"""The data path in one place: source → preprocess → engine → postprocess → sinks.

Live sources are captured in a thread that keeps only the newest frame (capture.py); files,
folders and unthrottled synthetic sources are read by the lanes themselves.

A lane is one onnxruntime session with its own input tensor, run by its own thread. Its loop reads
top to bottom: take the next frames (a batch of up to N for files, folders and unthrottled
synthetic; one for live sources), preprocessing each into its slot of the tensor as it is read → run
inference once for the batch → postprocess → hand the results to the publisher (publisher.py), which
gives them to the sinks one per frame, strictly in frame order. With two lanes of one thread each,
one lane's Python work (reading, preprocessing, publishing) runs while the other is in inference, so
the cores do not sit idle between session.run calls (the lanes take turns for that work: `Turns`);
a batch pays onnxruntime's per-operator overhead once for N frames (measured, docs/BENCHMARKS.md).
How many lanes, threads and frames per inference is decided once, in plan.py. Live sources default
to one lane with all threads and one frame per inference (lowest latency on the newest frame).

With regions (watch.py), a lane classifies each frame's regions instead of the frame: one run per model
and frame (its RegionGroups), a top-k per region; the publisher then writes a record per region and feeds
the regions' states in frame order, and the events go to the sinks.

The main thread supervises: stats lines, stall detection of the capture thread, shutdown. Health
for /healthz is judged in health.py from what the pipeline observes.

Why one file of ~420 lines: the data path is meant to read in one place, top to bottom; the parts it
drives (capture, publisher, plan, health, the watcher) live beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

from edge_runtime.core import health
from edge_runtime.core.capture import CaptureThread, FrameFeed, Handoff, InlineReader, warn_skipped
from edge_runtime.engines import Engine
from edge_runtime.util.notify import Notifier
from edge_runtime.engines.postprocess import NonFiniteOutput, Postprocessor, refuse, region_refused
from edge_runtime.core.refusals import RefusalStreak
from edge_runtime.engines.preprocess import FrameError, Preprocessor
from edge_runtime.core.publisher import Publisher, Result
from edge_runtime.watch.regions import RegionGroup
from edge_runtime.core.sink import OutputClosed, Sink
from edge_runtime.sources import Frame, Source
from edge_runtime.core.stats import Stats
from edge_runtime.watch.watcher import Watch

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
    paced: bool = False             # --realtime: reading waits for the frame's time (no Turns while it waits)


class Lane:
    """One session, its own preprocessing buffer and postprocessor."""

    def __init__(self, engine: Engine, top_k: int, batch: int = 1, groups: Sequence[RegionGroup] = ()):
        self.engine = engine
        self.batch = batch
        self.groups = list(groups)      # regions: these classify the frame's crops instead of the frame
        self.pre = Preprocessor(engine.spec.input)
        self.post = Postprocessor(engine.spec, top_k)
        self.tensor = self.pre.new_buffer(batch)    # reused for every batch this lane takes


class Turns:
    """Lanes of a throughput source take turns for their Python work and overlap only in session.run.

    Two lanes' Python work at the same time only interleaves on the GIL: every OpenCV or numpy call
    hands it over and waits to get it back, and each lane's work takes longer. Taking turns, the
    lanes settle into alternation (one works while the other infers) and the waits go: 3-7% more
    frames/s with two lanes, regions and whole frames (docs/BENCHMARKS.md). Live and paced (--realtime)
    sources do not take turns: a lane there waits for the next frame while it reads, and must not hold
    the others' publishing up meanwhile.
    """

    def __init__(self, enabled: bool = True):
        self._lock = threading.Lock() if enabled else None

    def __enter__(self) -> None:
        if self._lock is not None:
            self._lock.acquire()

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()

    @contextmanager
    def released(self):
        """Around a session.run inside a turn: the other lanes work meanwhile."""
        if self._lock is None:
            yield
            return
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()


@dataclass
class Taken:
    """Frames a lane has read, preprocessed into its tensor: the usable ones as (slot, preprocess ms)."""
    seq: int
    frames: list[Frame]
    usable: list[tuple[int, float]]
    picks: list[frozenset[str] | None] | None = None     # per frame: what the gate classifies (None: all)


class Pipeline:
    def __init__(self, make_source: Callable[[], Source], engine: Engine | Sequence[Engine], sinks: list[Sink],
                 options: PipelineOptions, *, live: bool, source_uri: str, stop: threading.Event | None = None,
                 notifier: Notifier | None = None, stats: Stats | None = None, watch: Watch | None = None,
                 region_groups: Sequence[Sequence[RegionGroup]] | None = None):
        """`live` and `source_uri` come from the run plan: the pipeline does not probe the source.
        `watch`: states, events and snapshots (watch.py); `region_groups`: each lane's RegionGroups."""
        engines = list(engine) if isinstance(engine, (list, tuple)) else [engine]
        self.make_source = make_source
        self.live = live
        self._set_lanes(engines, options.top_k, options.batch, region_groups)
        self.sinks = sinks
        self.watch = watch
        # Frames wait in flight and in the reorder buffer: their 0.9 MB images, when no sink looks at
        # them, are let go once preprocessed (a few MB of RSS with batches on a video, measured).
        # An event's snapshot is drawn from its frame: kept while snapshots are on.
        self._keep_images = any(s.wants_images for s in sinks) or bool(watch and watch.writer)
        self.options = options
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier({})
        self.stats = stats or Stats()
        self.source_uri = source_uri
        self.inline = not live and options.inline_reader
        self.turns = Turns(enabled=self.inline and not options.paced and len(self.lanes) > 1)
        self.feed: FrameFeed = Handoff(live, self.stats)
        self.publisher = Publisher(sinks, self.stats, self.notifier, self.stop, source_uri, options.max_frames,
                                   watch=watch, untrained=self.lanes[0].engine.spec.untrained)
        self.refusals = RefusalStreak(self.stop, options.max_frames)    # every frame refused: back off
        self._generation = 0
        self.capture: CaptureThread | None = None
        self.started_mono = time.perf_counter()
        self.error: BaseException | None = None
        self.output_closed = False
        self._read_lock = threading.Lock()      # one lane reads the source at a time
        self._done = threading.Event()          # the source ended: lanes finish the frames in flight
        self._failure: BaseException | None = None

    @property
    def processed(self) -> int:
        return self.publisher.processed

    # -- the main thread --

    def run(self) -> int:
        """Run until the source ends, max_frames, a stop signal or a closed output. Returns frames processed."""
        if self.inline:
            self.feed = InlineReader(self.make_source, self.stats)
        else:
            self._start_capture()
        threads = [threading.Thread(target=self._lane_loop, args=(i,), name=f"lane-{i}", daemon=True)
                   for i in range(len(self.lanes))]
        try:
            for t in threads:
                t.start()
            self._supervise(threads)
            if self._failure is not None:
                raise self._failure
        except OutputClosed:
            log.info("output closed by its reader; stopping")
            self.output_closed = True
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._shut_down(threads)
        return self.processed

    def _supervise(self, threads: list[threading.Thread]) -> None:
        """Stats lines every interval and stall detection, while the lanes run."""
        next_stats = time.perf_counter() + self.options.stats_interval
        while any(t.is_alive() for t in threads):
            self.stop.wait(0.1)
            if self.stop.is_set():
                return
            self._check_stall()
            now = time.perf_counter()
            if now >= next_stats:
                next_stats = now + self.options.stats_interval
                with self.publisher.cond:
                    self.publisher.publish_stats()

    def _shut_down(self, threads: list[threading.Thread]) -> None:
        self.stop.set()
        self.notifier.stopping()
        for t in threads:
            # A lane finishes the frame in flight; SIGTERM must still exit within 2 s.
            t.join(timeout=1.5 / len(threads))
        if self.capture is not None:
            # Let it close the source: native capture code still running at interpreter exit aborts.
            self.capture.join(timeout=1.5)
        if isinstance(self.feed, InlineReader) and self._read_lock.acquire(timeout=1.0):
            try:
                self.feed.close()
            finally:
                self._read_lock.release()

    def _start_capture(self) -> None:
        self._generation += 1
        self.capture = CaptureThread(self.make_source, self.feed, self.stats, self.stop,
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

    # -- a lane --

    def _lane_loop(self, index: int) -> None:
        try:
            while not self.stop.is_set() and not self._done.is_set():
                lane = self.lanes[index]                # a reload swaps lanes between two batches
                # Frames read but not yet published: every lane's batch in flight plus one more batch, so
                # a lane that finishes first goes on; beyond that it waits.
                self.publisher.wait_for_room(max(2 * len(self.lanes), (len(self.lanes) + 1) * lane.batch))
                with self.turns:                        # this lane's turn, but for its session.run
                    taken = self._take(lane)            # read + preprocess into the lane's tensor
                    if taken is None:
                        return
                    if taken.frames:
                        results = self._infer(lane, taken)  # one session.run → postprocess
                        self.publisher.deliver(taken.seq, results)
                self.refusals.wait()                    # every frame refused: pause, outside the turn
            self._raise_source_error()
        except BaseException as exc:  # hand it to the main thread, stop the others
            if self._failure is None:
                self._failure = exc
            self.stop.set()

    def swap(self, engines: Sequence[Engine], *, top_k: int, batch: int,
             region_groups: Sequence[Sequence[RegionGroup]] | None = None) -> None:
        """Reload: new sessions (and region groups) for every lane, taken up by each lane at its next batch
        (the batch in flight finishes on the old ones; frames are not lost or reordered). The source is
        not touched."""
        self._set_lanes(engines, top_k, batch, region_groups)
        self.publisher.untrained = engines[0].spec.untrained

    def _set_lanes(self, engines: Sequence[Engine], top_k: int, batch: int,
                   region_groups: Sequence[Sequence[RegionGroup]] | None) -> None:
        # A live source's frame is classified as soon as it is the newest: never wait to fill a batch.
        self.batch = 1 if self.live else max(1, batch)
        self.lanes = [Lane(e, top_k, self.batch, region_groups[i] if region_groups else ())
                      for i, e in enumerate(engines)]

    def _take(self, lane: Lane) -> Taken | None:
        """The next frames for this lane (none yet from a live source: an empty Taken); None when the
        pipeline is stopping or the source has ended."""
        with self._read_lock:
            want = self.publisher.wanted(lane.batch)
            if self._done.is_set() or self.stop.is_set():
                return None
            if want <= 0:
                return Taken(0, [], [])
            frames, usable, picks = self._read(lane, want)
            if not frames:
                if self._done.is_set():
                    self._raise_source_error()
                    return None
                self.notifier.watchdog()    # waiting for a live source is healthy
            return Taken(self.publisher.reserve(len(frames)), frames, usable, picks)

    def _raise_source_error(self) -> None:
        if self._done.is_set() and self.feed.error is not None:
            raise self.feed.error

    def _read(self, lane: Lane, want: int) -> tuple[list[Frame], list[tuple[int, float]], list | None]:
        """Up to `want` frames (fewer at the end of the source or a skipped item), each preprocessed into
        the lane's tensor as soon as it is read: a frame just decoded is still in the CPU's cache, and
        its image can be let go at once. A refused frame's slot is run but not used.
        With the classify gate on (gate.py), each frame's gate decision is taken here, in read order
        (under the read lock): what it skips is neither preprocessed nor run."""
        frames: list[Frame] = []
        usable: list[tuple[int, float]] = []
        gates = self.watch.gates if self.watch is not None and self.watch.gates.active else None
        picks: list | None = [] if gates is not None else None
        while len(frames) < want:
            frame = self.feed.get(timeout=0.25)
            if frame is None:
                if self.feed.drained():
                    self._done.set()
                break
            slot = len(frames)
            frames.append(frame)
            if gates is not None:
                chosen = gates.choose(frame.image, frame.mono)
                picks.append(chosen)
                if not chosen:          # nothing changed: the whole frame is skipped
                    if not self._keep_images:
                        frame.image = None
                    continue
            if lane.groups:                 # regions: cropped and preprocessed in _infer, from the image
                usable.append((slot, 0.0))
                continue
            t0 = time.perf_counter()
            try:
                lane.pre(frame.image, lane.tensor[slot:slot + 1])
            except FrameError as exc:
                warn_skipped(self.stats, f"frame {frame.index}: {exc}")
                continue
            usable.append((slot, (time.perf_counter() - t0) * 1000.0))
            if not self._keep_images:
                frame.image = None
        return frames, usable, picks

    def _infer(self, lane: Lane, taken: Taken) -> list[Result]:
        """One session.run for the batch, then each usable frame's top-k."""
        picks = taken.picks or [None] * len(taken.frames)
        if lane.groups:
            return [self._infer_regions(lane, frame, pick) for frame, pick in zip(taken.frames, picks, strict=True)]
        # A frame the gate skipped: published as gated (no record; its state stands).
        results: list[Result] = [(f, {}, 0.0, 0.0, 0) if p is not None and not p else None
                                 for f, p in zip(taken.frames, picks, strict=True)]
        if taken.usable:
            t1 = time.perf_counter()
            with self.turns.released():
                outputs = lane.engine.run_batch(lane.tensor[:taken.usable[-1][0] + 1])
            inf_ms = (time.perf_counter() - t1) * 1000.0    # each frame of the batch waited for the whole run
            for i, pre_ms in taken.usable:
                try:
                    results[i] = (taken.frames[i], lane.post.top(outputs[i]), pre_ms, inf_ms, len(taken.frames))
                except NonFiniteOutput as exc:      # NaN/inf: never published (JSON has no NaN)
                    refuse(self.stats, taken.frames[i].index, exc)
                    self.refusals.refused(taken.frames[i].index, exc)
                else:
                    self.refusals.passed(taken.frames[i].index)
        return results

    def _infer_regions(self, lane: Lane, frame: Frame, pick: frozenset[str] | None = None) -> Result:
        """The frame's regions, one run per model (RegionGroup); the top-k by region name. `pick`: the
        regions the gate classifies (None: all); only those are cropped and batched."""
        tops: dict[str, list] = {}
        pre_ms = inf_ms = 0.0
        if pick is not None and not pick:
            return frame, {}, 0.0, 0.0, 0       # gated: nothing changed (the image was let go in _read)
        try:
            refused = []
            for group in lane.groups:
                only = None if pick is None else [i for i, name in enumerate(group.names) if name in pick]
                if only is not None and not only:
                    continue
                names = group.names if only is None else [group.names[i] for i in only]
                for name, top in zip(names, group.classify(frame.image, self.turns.released, only), strict=True):
                    if top is None:
                        refused.append(name)
                    else:
                        tops[name] = top
                pre_ms, inf_ms = pre_ms + group.last_ms[0], inf_ms + group.last_ms[1]
            if refused:         # a NaN/inf row drops its region alone; the frame only if all are refused
                if self.watch is not None:
                    self.watch.refused(refused)
                exc = NonFiniteOutput(f"the model's output holds NaN or infinity (regions {', '.join(refused)})")
                if not tops:
                    raise exc
                region_refused(frame.index, exc)
        except FrameError as exc:
            warn_skipped(self.stats, f"frame {frame.index}: {exc}")
            return None
        except NonFiniteOutput as exc:              # NaN/inf: never published (JSON has no NaN)
            refuse(self.stats, frame.index, exc)
            self.refusals.refused(frame.index, exc)
            return None
        finally:
            if not self._keep_images:
                frame.image = None
        self.refusals.passed(frame.index)
        return frame, tops, pre_ms, inf_ms, 1

    # -- for sinks and the daemon --

    def source_connected(self) -> bool:
        if self.inline:
            return isinstance(self.feed, InlineReader) and not self.feed.finished
        return bool(self.capture is not None and self.capture.connected)

    def health(self, unhealthy_after: float = 30.0) -> dict:
        """For /healthz (health.py judges)."""
        cap = self.capture
        return health.assess(health.Observed(
            now=time.perf_counter(), started=self.started_mono, last_processed=self.publisher.last_processed_mono,
            lost_since=None if cap is None else cap.lost_since, lost_reason="" if cap is None else cap.lost_reason,
            source_connected=self.source_connected(), frames_processed=self.stats.frames_processed,
            error=self.error, stopped=self.stop.is_set()), unhealthy_after)

    def finish(self) -> dict | None:
        """Final stats line to every sink (after run), then close them."""
        line = None
        if self.watch is not None:
            self.watch.close()          # the queued snapshots first: the final line counts them
        try:
            line = self.publisher.publish_stats(final=True)
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
