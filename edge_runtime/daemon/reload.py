"""Reload without a restart (SIGHUP, `systemctl reload edge-runtime`): the config file and the model.

In a thread of its own, so classification goes on meanwhile: the config file is read again and
checked, the new model is loaded, checked against its description (metadata, sidecar, labels) and
warmed up beside the running one; only then are the lanes' sessions swapped, between two batches
(Pipeline.swap). The camera is not reopened. Anything wrong (an unknown key, a truncated ONNX file, a
model of another input size) is refused in one line naming the file and the problem, and the daemon
keeps what it had. systemd hears RELOADING=1 at the start and READY=1 at the end, either way.

What a reload applies: the model and its description (`model`, `model_spec`), `top_k`, `batch`, the
log level, the classify gate's settings (`classify:`, top level and per region; each gate keeps its
picture), and each region's model (its file read again; its labels with it), box, threshold(s) and
min_frames: the teach loop's last step is a reload. Regions added, removed or renamed take a restart
(MQTT discovery and the page are set up per region name), as do the other keys (the source, capture,
threads, lanes, MQTT, HTTP, ...): they are read and checked, and the warning names the key.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import logging
import threading
from typing import Callable

from edge_runtime.util import schema
from edge_runtime.util.errors import UserError, first_line, preparing

log = logging.getLogger(__name__)

APPLIED = {"model", "model_spec", "top_k", "batch", "log", "regions", "classify"}


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
        self.last_error: str | None = None
        self._waiters: list[threading.Event] = []       # reload_now() callers, told when their reload is done
        self._waiters_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="reloader", daemon=True)

    def start(self) -> "Reloader":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.pipeline.stop.is_set():
            if self.requested.wait(0.25) and not self.pipeline.stop.is_set():
                self.requested.clear()
                with self._waiters_lock:        # those who asked before this reload read the files
                    waiters, self._waiters = self._waiters, []
                self.reload()
                for done in waiters:
                    done.set()

    def reload_now(self, timeout: float = 300.0) -> str | None:
        """A reload in the reloader's own thread (so never two at once, SIGHUP's included), waited for:
        None when it took effect, else the reason it was refused. For the Teach page's deploy and rollback."""
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        self.requested.set()
        if not done.wait(timeout):
            return f"the reload did not finish within {timeout:.0f} s"
        return self.last_error

    def reload(self) -> bool:
        """One reload; True when it took effect. It never raises: whatever goes wrong (a UserError, or
        anything unexpected while the config, models, sessions or sinks are prepared) is one line and a
        counted `reload_failures`, the previous model keeps serving, systemd hears READY=1 and the next
        SIGHUP is served (an exception escaping here would end the reloader thread for good)."""
        self.notifier.reloading()
        log.info("reload: reading the config and the model again")
        self.last_error = None
        try:
            return self._reload()
        except UserError as exc:
            self.last_error = str(exc)
            self.stats.add("reload_failures")
            log.error("reload refused, still running with the previous config and model: %s", exc)
            return False
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {first_line(exc)}"
            self.stats.add("reload_failures")
            log.error("reload failed unexpectedly, still running with the previous config and model: %s: %s",
                      type(exc).__name__, first_line(exc))
            log.debug("reload failure", exc_info=True)
            return False
        finally:
            self.notifier.ready()

    def _reload(self) -> bool:
        from edge_runtime.daemon.assemble import lane_sessions, show_model, show_region_models
        from edge_runtime.core.plan import check_threshold_labels, load_model, load_region_models

        with preparing("reading the config"):
            cfg = self.load_config()
        self._say_what_needs_a_restart(cfg)
        cfg = dataclasses.replace(cfg, regions=self._regions(cfg))
        with preparing("loading the model"):
            plan, engine = load_model(self.plan, cfg)       # the running plan: same lanes, threads, source
        with preparing("loading the regions' models"):
            plan, region_engines = load_region_models(plan, cfg, engine)
            check_threshold_labels(cfg, region_engines, strict=False, config_file=None)
        with preparing("preparing the lanes' sessions"):
            engines, groups = lane_sessions(cfg, plan, engine, region_engines)
        # Everything is ready: from here on the new model serves.
        self.pipeline.swap(engines, top_k=cfg.top_k, batch=plan.batch, region_groups=groups)
        if self.pipeline.watch is not None:     # the gates keep their pictures and counts (gate.py)
            self.pipeline.watch.reconfigure(cfg.regions, self.cfg.publish, cfg.classify)
        old_level = self.cfg.log.level
        self.cfg, self.plan = cfg, plan
        self.stats.add("reloads")
        if self.apply_log_level is not None and cfg.log.level != old_level:
            self.apply_log_level(cfg.log.level)
        show_model(self.stats, engine)
        show_region_models(self.stats, cfg.regions, cfg.model, region_engines)
        info = engine.info()
        for sink in self.sinks:
            for tell, news in ((sink.model_changed, info), (sink.regions_changed, cfg.regions)):
                try:
                    tell(news)
                except Exception as exc:        # one sink's bug: the others are told, the new model serves
                    self.stats.add("reload_failures")
                    log.error("reload: the %s output could not take the new model (it serves nonetheless): "
                              "%s: %s", sink.name, type(exc).__name__, first_line(exc))
                    log.debug("sink failure on reload", exc_info=True)
        log.info("reload: now classifying with %s", engine.describe())
        del engine, engines, groups, region_engines
        self.pipeline.stop.wait(1.0)        # the batch in flight finishes on the old sessions, then they go
        _release_freed_memory()
        return True

    def _regions(self, cfg) -> tuple:
        """The new regions when their names are the running ones (boxes, models and thresholds apply);
        the running ones otherwise, with a warning naming what was added or removed."""
        old, new = [r.name for r in self.cfg.regions], [r.name for r in cfg.regions]
        if old == new:
            return cfg.regions
        added, removed = [n for n in new if n not in old], [n for n in old if n not in new]
        what = "; ".join(part for part in (added and f"added {', '.join(added)}",
                                           removed and f"removed {', '.join(removed)}") if part) or "reordered"
        log.warning("reload: regions %s; that takes a restart (sudo systemctl restart edge-runtime). "
                    "Reloading the rest, the running regions keep their settings", what)
        return self.cfg.regions

    def _say_what_needs_a_restart(self, cfg) -> None:
        old, new = schema.to_dict(self.cfg), schema.to_dict(cfg)
        changed = sorted(k for k in new if k not in APPLIED and new.get(k) != old.get(k))
        if changed:
            log.warning("reload: %s changed; that takes a restart (sudo systemctl restart edge-runtime). "
                        "Reloading the rest", ", ".join(changed))
