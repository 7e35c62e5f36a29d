"""Prometheus metrics for `GET /metrics`, on a dedicated CollectorRegistry.

Per-frame cost is two or three Histogram.observe() calls. Everything else (frame counters,
reconnects, FPS, temperature, throttling, health, MQTT counters) is read at scrape time from what
the daemon already keeps (Stats, the last stats line, Pipeline.health()).
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client import exposition as exposition_mod
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_runtime import __version__
from edge_runtime.util import system
from edge_runtime.core.stats import Stats

# Inference on a Pi runs from a few ms (tiny nets) to a few hundred (big ones).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)

COUNTERS = (
    ("frames_captured", "Frames delivered by the source"),
    ("frames_processed", "Frames classified"),
    ("frames_dropped", "Frames replaced by a newer one before inference (live sources)"),
    ("frames_skipped", "Unreadable or unusable frames skipped"),
    ("frames_gated", "Frames the classify gate skipped whole (nothing changed)"),
    ("source_reconnects", "Times a lost source came back"),
    ("source_losses", "Times the source was lost"),
    ("reloads", "Config and model reloads (SIGHUP) that took effect"),
    ("reload_failures", "Reloads refused (bad config or model); the daemon kept what it had"),
)


class Metrics:
    def __init__(self, stats: Stats, *, model_info: dict[str, str] | None = None,
                 health: Callable[[], dict] | None = None):
        self.stats = stats
        self.model_info = model_info or {}
        self.health = health
        self.last_stats: dict | None = None
        self.extra_collect: Callable[[], Iterable] | None = None    # more families (the HTTP sink's)
        self.registry = CollectorRegistry(auto_describe=False)
        kw = {"buckets": LATENCY_BUCKETS, "registry": self.registry}
        self.preprocess = Histogram("edge_runtime_preprocess_latency_seconds",
                                    "Preprocessing time per frame (resize, crop, normalise)", **kw)
        self.inference = Histogram("edge_runtime_inference_latency_seconds",
                                   "onnxruntime inference time per frame", **kw)
        self.end_to_end = Histogram("edge_runtime_end_to_end_latency_seconds",
                                    "From frame capture to its prediction being published", **kw)
        ProcessCollector(registry=self.registry)      # process_resident_memory_bytes, CPU seconds, fds
        self.registry.register(self)

    def observe(self, latency_ms: dict) -> None:
        self.preprocess.observe(latency_ms["preprocess"] / 1000.0)
        self.inference.observe(latency_ms["inference"] / 1000.0)
        self.end_to_end.observe(latency_ms["total"] / 1000.0)

    # The classic text format (what every Prometheus version scrapes); newer clients default to 1.0.0.
    content_type = getattr(exposition_mod, "CONTENT_TYPE_PLAIN_0_0_4", exposition_mod.CONTENT_TYPE_LATEST)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # The registry calls collect() on every scrape.
    def collect(self):
        s = self.stats
        for name, doc in COUNTERS:
            c = CounterMetricFamily(f"edge_runtime_{name}", doc)
            c.add_metric([], getattr(s, name))
            yield c

        line = self.last_stats
        if line is not None:
            fps = GaugeMetricFamily("edge_runtime_fps", "Frames per second over the last stats interval",
                                    labels=["stage"])
            for stage in ("capture", "inference"):
                fps.add_metric([stage], float(line["fps"][stage]))
            yield fps

        temp = system.cpu_temp_c()
        if temp is not None:
            yield GaugeMetricFamily("edge_runtime_cpu_temperature_celsius", "CPU (SoC) temperature", value=temp)
        flags = system.throttled()
        if flags is not None:
            g = GaugeMetricFamily("edge_runtime_throttled", "Raspberry Pi firmware throttling flags (1 = set)",
                                  labels=["flag"])
            for name in system.THROTTLE_BITS.values():
                g.add_metric([name], 1.0 if flags.get(name) else 0.0)
            yield g
        yield GaugeMetricFamily("edge_runtime_resident_memory_bytes", "Resident set size of the daemon",
                                value=system.rss_mb() * 1e6)

        info = GaugeMetricFamily("edge_runtime_model_info", "The loaded model (value is always 1)",
                                 labels=sorted(self.model_info))
        info.add_metric([self.model_info[k] for k in sorted(self.model_info)], 1.0)
        yield info
        regions = self.stats.get_extra("region_models")
        if regions:
            family = GaugeMetricFamily("edge_runtime_region_model_info",
                                       "The model file each region runs (value is always 1)", labels=["region", "path"])
            for name, path in sorted(regions.items()):
                family.add_metric([name, path], 1.0)
            yield family
        build = GaugeMetricFamily("edge_runtime_build_info", "edge_runtime version (value is always 1)",
                                  labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build

        if self.health is not None:
            h = self.health()
            yield GaugeMetricFamily("edge_runtime_healthy", "1 while frames flow (what /healthz says)",
                                    value=1.0 if h.get("healthy") else 0.0)
            yield GaugeMetricFamily("edge_runtime_source_up", "1 while the source is connected",
                                    value=1.0 if h.get("source_connected") else 0.0)
            age = h.get("last_frame_age_s")
            if age is not None:
                yield GaugeMetricFamily("edge_runtime_last_frame_age_seconds",
                                        "Seconds since the last processed frame", value=float(age))

        mqtt = s.get_extra("mqtt")
        if isinstance(mqtt, dict):
            yield GaugeMetricFamily("edge_runtime_mqtt_connected", "1 while connected to the MQTT broker",
                                    value=1.0 if mqtt.get("connected") else 0.0)
            for key, doc in (("sent", "MQTT messages sent"), ("dropped", "MQTT messages dropped (queue full, "
                                                                          "or lost with the connection)")):
                c = CounterMetricFamily(f"edge_runtime_mqtt_messages_{key}", doc)
                c.add_metric([], float(mqtt.get(key, 0)))
                yield c
            yield GaugeMetricFamily("edge_runtime_mqtt_queued_messages", "MQTT messages waiting to be sent",
                                    value=float(mqtt.get("queued", 0)))

        for key, doc in (("written", "Event snapshots written"), ("failed", "Event snapshots that could not be "
                         "written (disk full, read-only)"), ("dropped", "Event snapshots dropped (writer behind)")):
            count = s.get_extra(f"snapshots_{key}")     # set by snapshots.SnapshotWriter once started
            if count is not None:
                c = CounterMetricFamily(f"edge_runtime_snapshots_{key}", doc)
                c.add_metric([], float(count))
                yield c

        regions = s.get_extra("regions")
        if isinstance(regions, dict):           # set by watch.Watch when regions are configured
            frames = CounterMetricFamily("edge_runtime_region_frames", "Frames classified per region",
                                         labels=["region"])
            changes = CounterMetricFamily("edge_runtime_region_state_changes", "State changes (events) per region",
                                          labels=["region"])
            refused = CounterMetricFamily("edge_runtime_region_frames_refused", "Frames in which a region's scores "
                                          "held NaN or infinity (left out of that frame)", labels=["region"])
            for name, summary in regions.items():
                frames.add_metric([name], float(summary.get("frames", 0)))
                changes.add_metric([name], float(summary.get("changes", 0)))
                refused.add_metric([name], float(summary.get("refused", 0)))
            yield frames
            yield changes
            yield refused
        gate = s.get_extra("gate")              # the whole frame's classify gate, when on
        counts = {n: c for n, c in regions.items()} if isinstance(regions, dict) else \
            {"frame": gate} if isinstance(gate, dict) else {}
        if counts:
            for key, doc in (("classified", "Frames in which the region was classified"),
                             ("gated", "Frames in which the classify gate skipped the region (nothing changed)")):
                c = CounterMetricFamily(f"edge_runtime_region_{key}", doc, labels=["region"])
                for name, summary in counts.items():
                    c.add_metric([name], float(summary.get(key, 0)))
                yield c

        if self.extra_collect is not None:
            yield from self.extra_collect()
