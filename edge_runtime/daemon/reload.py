"""Reload without a restart (SIGHUP, `systemctl reload edge-runtime`): the config file and the model.

In a thread of its own, so classification goes on meanwhile: the config file is read again and
checked, the new model is loaded, checked against its description (metadata, sidecar, labels) and
warmed up beside the running one; only then are the lanes' sessions swapped, between two batches
(Pipeline.swap). The camera is not reopened. Anything wrong (an unknown key, a truncated ONNX file, a
model of another input size) is refused in one line naming the file and the problem, and the daemon
keeps what it had. systemd hears RELOADING=1 at the start and READY=1 at the end, either way.

What a reload applies: the model and its description (`model`, `model_spec`), the regions' model
files (read again from the same paths), `top_k`, `batch`, the log level. Other keys (the source,
capture, threads, lanes, the regions themselves, MQTT, HTTP, ...) are read and checked, and a change to
them is said to need a restart.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import threading
from typing import Callable

from edge_runtime.util import schema
from edge_runtime.util.errors import UserError

log = logging.getLogger(__name__)

APPLIED = {"model", "model_spec", "top_k", "batch", "log"}


def _release_freed_memory() -> None:
    """Give the old sessions' memory back to the system: glibc keeps freed arenas mapped otherwise,
    and RSS would climb with each reload (onnxruntime frees the session; malloc keeps the pages)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass        # not glibc (musl, macOS): nothing to trim


class Reloader:
    def __init__(self, load_config: Callable[[], object], cfg, plan, pipeline, sinks, stats, notifier,
                 *, apply_log_level: Callable[[str], None] | None = None):
        """`load_config()` reads and validates the config file with the command line on top, as at start."""
        self.load_config = load_config
        self.cfg = cfg
        self.plan = plan
        self.pipeline = pipeline
        self.sinks = sinks
        self.stats = stats
        self.notifier = notifier
        self.apply_log_level = apply_log_level
        self.requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reloader", daemon=True)

    def start(self) -> "Reloader":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.pipeline.stop.is_set():
            if self.requested.wait(0.25) and not self.pipeline.stop.is_set():
                self.requested.clear()
                self.reload()

    def reload(self) -> bool:
        """One reload; True when it took effect."""
        from edge_runtime.daemon.assemble import lane_sessions, show_model
        from edge_runtime.core.plan import load_model, load_region_models

        self.notifier.reloading()
        log.info("reload: reading the config and the model again")
        try:
            cfg = self.load_config()
            self._say_what_needs_a_restart(cfg)
            # The running regions (their names, boxes and states stay); their model files are read again.
            cfg = dataclasses.replace(cfg, regions=self.cfg.regions)
            plan, engine = load_model(self.plan, cfg)       # the running plan: same lanes, threads, source
            plan, region_engines = load_region_models(plan, cfg, engine)
            engines, groups = lane_sessions(cfg, plan, engine, region_engines)
        except UserError as exc:
            self.stats.add("reload_failures")
            log.error("reload refused, still running with the previous config and model: %s", exc)
            self.notifier.ready()
            return False
        self.pipeline.swap(engines, top_k=cfg.top_k, batch=plan.batch, region_groups=groups)
        if self.apply_log_level is not None and cfg.log.level != self.cfg.log.level:
            self.apply_log_level(cfg.log.level)
        show_model(self.stats, engine)
        info = engine.info()
        for sink in self.sinks:
            sink.model_changed(info)
        self.cfg, self.plan = cfg, plan
        self.stats.add("reloads")
        log.info("reload: now classifying with %s", engine.describe())
        del engine, engines, groups, region_engines
        self.pipeline.stop.wait(1.0)        # the batch in flight finishes on the old sessions, then they go
        _release_freed_memory()
        self.notifier.ready()
        return True

    def _say_what_needs_a_restart(self, cfg) -> None:
        old, new = schema.to_dict(self.cfg), schema.to_dict(cfg)
        changed = sorted(k for k in new if k not in APPLIED and new.get(k) != old.get(k))
        if changed:
            log.warning("reload: %s changed; that takes a restart (sudo systemctl restart edge-runtime). "
                        "Reloading the rest", ", ".join(changed))
