"""Counters, FPS and latency percentiles. Bounded memory: a fixed window of recent latencies."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from edge_runtime.util import system

WINDOW = 2048   # latency samples kept for percentiles (about a minute at 30 fps)


def _percentiles(samples) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.fromiter(samples, dtype=np.float64), [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


class Stats:
    """Shared by the capture thread (captured, dropped, reconnects) and the main loop (processed)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.frames_captured = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_skipped = 0      # unreadable/unusable frames, warned about
        self.frames_gated = 0        # frames the classify gate skipped whole (nothing changed; gate.py)
        self.source_reconnects = 0
        self.source_losses = 0
        self.reloads = 0             # SIGHUP reloads that took effect
        self.reload_failures = 0     # ... and those refused (the daemon kept what it had)
        self.first_frame_mono: float | None = None
        self.first_frame_ts: float | None = None
        self.inference_ms: deque[float] = deque(maxlen=WINDOW)
        self.total_ms: deque[float] = deque(maxlen=WINDOW)
        self.preprocess_ms: deque[float] = deque(maxlen=WINDOW)
        self.inference_per_frame_ms: deque[float] = deque(maxlen=WINDOW)   # a batch's run ÷ its frames
        # For FPS over the last interval.
        self._last_mono = time.perf_counter()
        self._last_captured = 0
        self._last_processed = 0
        # Process CPU time (all threads), for CPU seconds per hour: what the classify gate saves.
        self._started_mono, self._started_cpu = self._last_mono, time.process_time()
        self._last_cpu = self._started_cpu
        self.extra: dict = {}        # other modules' counters (mqtt drops, ...) merged into the line

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def set_extra(self, key: str, values) -> None:
        """Replace one section of the stats line's extras (a sink's counters); merged by snapshot().
        A callable is asked for its value when a line is made: for values that change every frame
        (the regions' states), which would otherwise be copied on every frame for a line a minute."""
        with self._lock:
            self.extra[key] = dict(values) if isinstance(values, dict) else values

    def get_extra(self, key: str):
        """One section of the extras as the next stats line would show it (None if not set)."""
        with self._lock:
            value = self.extra.get(key)
            return value() if callable(value) else value

    def captured(self) -> None:
        with self._lock:
            self.frames_captured += 1
            if self.first_frame_mono is None:
                self.first_frame_mono = time.perf_counter()
                self.first_frame_ts = time.time()

    def processed(self, preprocess_ms: float, inference_ms: float, total_ms: float, batch: int = 1) -> None:
        """One published frame; `inference_ms` is the time of the session.run it was part of (`batch` frames)."""
        with self._lock:
            self.frames_processed += 1
            self.preprocess_ms.append(preprocess_ms)
            self.inference_ms.append(inference_ms)
            self.inference_per_frame_ms.append(inference_ms / max(1, batch))
            self.total_ms.append(total_ms)

    def snapshot(self, final: bool = False) -> dict:
        """The stats JSON line. FPS is over the time since the previous snapshot (the whole run if final)."""
        now = time.perf_counter()
        cpu = time.process_time()
        with self._lock:
            if final:
                cpu_per_hour = (cpu - self._started_cpu) / max(now - self._started_mono, 1e-9) * 3600.0
            else:
                cpu_per_hour = (cpu - self._last_cpu) / max(now - self._last_mono, 1e-9) * 3600.0
            self._last_cpu = cpu
            if final and self.first_frame_mono is not None:
                span = max(now - self.first_frame_mono, 1e-9)
                cap_fps = self.frames_captured / span
                inf_fps = self.frames_processed / span
            else:
                span = max(now - self._last_mono, 1e-9)
                cap_fps = (self.frames_captured - self._last_captured) / span
                inf_fps = (self.frames_processed - self._last_processed) / span
            self._last_mono, self._last_captured, self._last_processed = \
                now, self.frames_captured, self.frames_processed
            line = {
                "type": "stats",
                "ts": round(time.time(), 3),
                "elapsed_s": round(now - self.first_frame_mono, 3) if self.first_frame_mono else 0.0,
                "frames_captured": self.frames_captured,
                "frames_processed": self.frames_processed,
                "frames_dropped": self.frames_dropped,
                "frames_skipped": self.frames_skipped,
                "frames_gated": self.frames_gated,
                "source_reconnects": self.source_reconnects,
                "reloads": self.reloads,
                "reload_failures": self.reload_failures,
                "fps": {"capture": round(cap_fps, 2), "inference": round(inf_fps, 2)},
                "cpu_s_per_hour": round(cpu_per_hour, 1),     # process CPU seconds per hour (final: whole run)
                "latency_ms": {"preprocess": _percentiles(self.preprocess_ms),
                               "inference": _percentiles(self.inference_ms),
                               "inference_per_frame": _percentiles(self.inference_per_frame_ms),
                               "total": _percentiles(self.total_ms)},
            }
            line.update({key: value() if callable(value) else value for key, value in self.extra.items()})
        line["cpu_temp_c"] = system.cpu_temp_c()
        line["throttled"] = system.throttled()
        line["rss_mb"] = system.rss_mb()
        if final:
            line["final"] = True
        return line


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def summary(line: dict) -> str:
    """One human line for the log/journal."""
    lat = line["latency_ms"]["inference"]
    temp = line.get("cpu_temp_c")
    throttled = line.get("throttled") or {}
    now_flags = [k for k in ("under_voltage", "throttled", "arm_freq_capped", "soft_temp_limit") if throttled.get(k)]
    return (f"fps {line['fps']['inference']:.1f} (capture {line['fps']['capture']:.1f}), "
            f"inference p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])}, processed {line['frames_processed']}, "
            f"dropped {line['frames_dropped']}, skipped {line['frames_skipped']}, "
            f"reconnects {line['source_reconnects']}, "
            f"temp {f'{temp:.1f} C' if temp is not None else 'n/a'}"
            + (f", THROTTLING: {' '.join(now_flags)}" if now_flags else "")
            + f", rss {line['rss_mb']} MB"
            + (", UNTRAINED MODEL (labels meaningless)" if (line.get("model") or {}).get("untrained") else ""))
