"""The data path in one place: source → preprocess → engine → postprocess → sinks.

Live sources are captured in a thread that keeps only the newest frame (capture.py); files,
folders and unthrottled synthetic sources are read here, in the loop. The loop preprocesses the
frame into one reused tensor, runs inference, postprocesses and publishes, sends the systemd
notifications, and watches the capture thread for stalls.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .capture import CaptureThread, Handoff, InlineReader, warn_skipped
from .engine import Engine
from .errors import first_line
from .notify import Notifier
from .postprocess import Postprocessor
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


class Pipeline:
    def __init__(self, make_source: Callable[[], Source], engine: Engine, sinks: list[Sink],
                 options: PipelineOptions, stop: threading.Event | None = None,
                 notifier: Notifier | None = None, stats: Stats | None = None):
        self.make_source = make_source
        self.engine = engine
        self.sinks = sinks
        self.options = options
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier({})
        self.stats = stats or Stats()
        self.pre = Preprocessor(engine.spec.input)
        self.post = Postprocessor(engine.spec, options.top_k)
        probe = make_source()
        self.live = probe.live
        self.source_uri = probe.uri
        self.tensor = self.pre.new_buffer()     # one input tensor, reused for every frame
        self.inline = not self.live and options.inline_reader
        self.handoff: Handoff | InlineReader = Handoff(self.live, self.stats)
        self._generation = 0
        self.capture: CaptureThread | None = None
        self.last_record: dict | None = None
        self.last_processed_mono: float | None = None
        self.started_mono = time.perf_counter()
        self.error: BaseException | None = None
        self.output_closed = False

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
        next_stats = time.perf_counter() + opts.stats_interval
        ready = False
        processed = 0
        try:
            while not self.stop.is_set():
                frame = self.handoff.get(timeout=0.25)
                now = time.perf_counter()
                if frame is None:
                    if self.handoff.drained():
                        if self.handoff.error is not None:
                            raise self.handoff.error
                        break
                    self._check_stall()
                elif self._process(frame, now):
                    processed += 1
                    if not ready:
                        ready = True
                        self.notifier.ready(f"running on {self.source_uri}")
                    if opts.max_frames is not None and processed >= opts.max_frames:
                        break
                self.notifier.watchdog()
                if now >= next_stats:
                    next_stats = now + opts.stats_interval
                    self._publish_stats()
        except OutputClosed:
            log.info("output closed by its reader; stopping")
            self.output_closed = True
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.stop.set()
            self.notifier.stopping()
            if self.capture is not None:
                # Let it close the source: native capture code still running at interpreter exit aborts.
                self.capture.join(timeout=1.5)
            if isinstance(self.handoff, InlineReader):
                self.handoff.close()
        return processed

    def _process(self, frame: Frame, now: float) -> bool:
        """preprocess → inference → postprocess → sinks for one frame; False if the frame was unusable."""
        t0 = time.perf_counter()
        try:
            tensor = self.pre(frame.image, self.tensor)
        except FrameError as exc:
            warn_skipped(self.stats, f"frame {frame.index}: {exc}")
            return False
        t1 = time.perf_counter()
        output = self.engine.run(tensor)
        t2 = time.perf_counter()
        top = self.post.top(output)
        pre_ms = (t1 - t0) * 1000.0
        inf_ms = (t2 - t1) * 1000.0
        total_ms = (time.perf_counter() - frame.mono) * 1000.0
        record = {"type": "prediction", "frame": frame.index, "ts": round(frame.ts, 6),
                  "source": self.source_uri, "top": top,
                  "latency_ms": {"preprocess": round(pre_ms, 3), "inference": round(inf_ms, 3),
                                 "total": round(total_ms, 3)}}
        if frame.path is not None:
            record["path"] = frame.path
        self.stats.processed(pre_ms, inf_ms, total_ms)
        self.last_record = record
        self.last_processed_mono = now
        for sink in self.sinks:
            sink.prediction(record, frame)
        return True

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
