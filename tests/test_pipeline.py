"""The pipeline's lanes and batches: frames classified side by side, several per session.run, still
reach the sinks once each, in order."""

from __future__ import annotations

import random
import threading
import time

import pytest

from edge_runtime.engines.ort import Engine
from edge_runtime.core.pipeline import Pipeline, PipelineOptions
from edge_runtime.sinks import OutputClosed, Sink
from edge_runtime.sources import SourceOptions, open_source


class ListSink(Sink):
    def __init__(self, close_after: int | None = None):
        self.records: list[dict] = []
        self.threads: set[str] = set()
        self.close_after = close_after

    def prediction(self, record, frame):
        self.records.append(record)
        self.threads.add(threading.current_thread().name)
        if self.close_after is not None and len(self.records) >= self.close_after:
            raise OutputClosed()


def jittery_engines(model, n: int, finished: list[int]) -> list[Engine]:
    """Real sessions whose run() sometimes takes much longer, so a later frame often finishes first."""
    engines = [Engine(str(model), 1) for _ in range(n)]
    rng = random.Random(7)
    lock = threading.Lock()
    for engine in engines:
        run = engine.run_batch

        def slow_run(tensor, run=run):
            out = run(tensor)
            time.sleep(rng.choice([0, 0, 0.004]))
            with lock:
                finished.append((threading.get_ident(), len(tensor)))
            return out
        engine.run_batch = slow_run
    return engines


def pipeline(model, n_lanes, sink, finished, max_frames=200, batch=1):
    engines = jittery_engines(model, n_lanes, finished)
    make = lambda: open_source("synthetic://320x240", SourceOptions())   # noqa: E731
    return Pipeline(make, engines, [sink], PipelineOptions(max_frames=max_frames, stats_interval=60, batch=batch),
                    live=False, source_uri="synthetic://320x240")


@pytest.mark.parametrize("batch", [1, 4])
def test_two_lanes_publish_in_frame_order_despite_jitter(tiny_model, batch):
    sink, finished = ListSink(), []
    p = pipeline(tiny_model, 2, sink, finished, max_frames=202, batch=batch)
    assert p.run() == 202
    assert [r["frame"] for r in sink.records] == list(range(202))
    assert len(sink.threads) == 2                    # both lanes really published
    assert len({lane for lane, _ in finished}) == 2
    sizes = [n for _, n in finished]
    assert max(sizes) == batch and sum(sizes) >= 202
    if batch > 1:
        assert sizes.count(batch) >= 202 // batch - 2 and 2 in sizes    # full batches; 202 = 50 x 4 + 2
    # (Without the pipeline's reorder buffer this test fails: the 4 ms jitter lets frame k+1 finish first.)


def test_a_sink_that_closes_stops_every_lane(tiny_model):
    sink, finished = ListSink(close_after=25), []
    p = pipeline(tiny_model, 2, sink, finished, max_frames=None)
    p.run()
    assert p.output_closed and len(sink.records) == 25
    assert [r["frame"] for r in sink.records] == list(range(25))


def test_live_source_slower_inference_gets_the_newest_frame_and_counts_drops(tiny_model):
    # 200 fps offered to inference that takes 15 ms a frame: every frame it takes must be the newest,
    # the ones in between counted as dropped, and nothing counted after the last one asked for.
    engine = Engine(str(tiny_model), 1)
    run = engine.run_batch
    engine.run_batch = lambda tensor: (time.sleep(0.015), run(tensor))[1]
    sink = ListSink()
    make = lambda: open_source("synthetic://320x240?fps=200", SourceOptions())   # noqa: E731
    p = Pipeline(make, [engine], [sink], PipelineOptions(max_frames=20, stats_interval=60, batch=4),
                 live=make().live, source_uri="synthetic://320x240?fps=200")
    assert p.live and p.batch == 1 and p.lanes[0].tensor.shape[0] == 1    # never waits to fill a batch
    assert p.run() == 20
    frames = [r["frame"] for r in sink.records]
    gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    assert len(frames) == 20 and min(gaps) >= 1 and sum(gaps) / len(gaps) > 2     # ~3 frames per inference
    stats = p.stats
    assert stats.frames_dropped >= frames[-1] - 19 - 2           # what was skipped was counted
    assert stats.frames_captured <= frames[-1] + 1 + 8   # capture stopped with the last frame (~3 arrive during it)
    assert all(r["latency_ms"]["total"] < 15 + 5 + 10 for r in sink.records[1:])  # fresh, not queued


def overlapping(intervals: list[tuple[str, float, float]]) -> int:
    """How many pairs of intervals from different threads overlap in time."""
    return sum(1 for i, (ta, a0, a1) in enumerate(intervals) for tb, b0, b1 in intervals[i + 1:]
               if ta != tb and a0 < b1 and b0 < a1)


def test_turns_let_one_lane_work_at_a_time_and_all_of_them_infer_together():
    """Turns: the work inside a turn never overlaps another thread's; the work inside released() does."""
    from edge_runtime.core.pipeline import Turns

    turns, lock = Turns(), threading.Lock()
    work: list[tuple[str, float, float]] = []
    runs: list[tuple[str, float, float]] = []

    def lane(name: str) -> None:
        for _ in range(15):
            with turns:
                t0 = time.perf_counter()
                time.sleep(0.001)                   # releases the GIL: without the turn, the lanes would overlap
                with lock:
                    work.append((name, t0, time.perf_counter()))
                with turns.released():
                    t0 = time.perf_counter()
                    time.sleep(0.005)
                    with lock:
                        runs.append((name, t0, time.perf_counter()))

    threads = [threading.Thread(target=lane, args=(f"lane-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(work) == len(runs) == 30
    assert overlapping(work) == 0
    assert overlapping(runs) > 0
    with pytest.raises(RuntimeError):           # an error in session.run: the turn is still given back once
        with turns:
            with turns.released():
                raise RuntimeError("run failed")
    with turns:                                 # not left held
        pass
    off = Turns(enabled=False)                  # live sources: no turns, nothing held
    with off, off.released():
        pass


def test_lanes_of_a_file_source_take_turns_but_a_live_source_does_not(tiny_model):
    """In a real two-lane pipeline: preprocessing of different lanes never overlaps; their runs do."""
    sink, finished = ListSink(), []
    p = pipeline(tiny_model, 2, sink, finished, max_frames=120)
    lock = threading.Lock()
    pre: list[tuple[str, float, float]] = []
    runs: list[tuple[str, float, float]] = []

    class Timed:
        def __init__(self, inner, into, pause):
            self.inner, self.into, self.pause = inner, into, pause

        def __call__(self, *args):
            t0 = time.perf_counter()
            time.sleep(self.pause)
            out = self.inner(*args)
            with lock:
                self.into.append((threading.current_thread().name, t0, time.perf_counter()))
            return out

    for lane in p.lanes:
        lane.pre = Timed(lane.pre, pre, 0.0005)
        lane.engine.run_batch = Timed(lane.engine.run_batch, runs, 0.002)
    assert p.run() == 120
    assert [r["frame"] for r in sink.records] == list(range(120))
    assert len({name for name, _, _ in pre}) == 2
    assert overlapping(pre) == 0 and overlapping(runs) > 0
    make = lambda: open_source("synthetic://320x240?fps=200", SourceOptions())   # noqa: E731
    live = Pipeline(make, [Engine(str(tiny_model), 1)] * 2, [ListSink()], PipelineOptions(max_frames=5),
                    live=True, source_uri="synthetic://320x240?fps=200")
    paced = Pipeline(make, [Engine(str(tiny_model), 1)] * 2, [ListSink()], PipelineOptions(max_frames=5, paced=True),
                     live=False, source_uri="video.avi")      # --realtime: a read waits for the frame's time
    assert live.turns._lock is None and paced.turns._lock is None and p.turns._lock is not None
