"""A sink receives every prediction record and every stats line. Small base, short implementations.

Lifecycle (as picamera2's outputs): a sink is constructed from its typed config section and does no
I/O there; `start(context)` binds, connects and starts its threads; `prediction()`/`stats()`/`event()` are called
from the pipeline (one caller at a time, in frame order); `close()` flushes and stops. A sink knows the
pipeline only through the `SinkContext` it is started with, and never another sink.
"""

from __future__ import annotations

import dataclasses

import threading
from dataclasses import dataclass, field
from typing import Callable

from edge_runtime.sources import Frame
from edge_runtime.core.stats import Stats


class OutputClosed(Exception):
    """The reader of our output went away (closed pipe): end quietly."""


def _no_health(unhealthy_after: float) -> dict | None:
    return None


@dataclass(frozen=True)
class SinkContext:
    """What a sink may know of the running daemon."""
    stats: Stats = field(default_factory=Stats)
    stop: threading.Event = field(default_factory=threading.Event)
    live: bool = False                       # a live source: never block the caller on a slow reader
    model_info: dict[str, str] = field(default_factory=dict)   # path, engine, arch, weights, input, labels, untrained
    # health(unhealthy_after_s) -> the /healthz dict, or None when no pipeline runs (tools, tests)
    health: Callable[[float], dict | None] = _no_health
    regions: tuple = ()                      # config.Config.regions: names and boxes of the watched regions
    # snapshot_reader(file name) -> the JPEG's bytes, or None (not ours, not there, snapshots off)
    snapshot_reader: Callable[[str], bytes | None] | None = None
    # reload() -> None once a reload (the config, the models, the taught models) took effect, else why not;
    # the Teach page deploys a taught model by it. None: no reloader (tools, tests).
    reload: Callable[[], str | None] | None = None


class Sink:
    name = "sink"
    wants_images = False    # True: prediction() needs frame.image (otherwise it is let go after preprocessing)

    def start(self, context: SinkContext) -> "Sink":
        self.context = context
        return self

    def prediction(self, record: dict, frame: Frame) -> None:
        pass

    def frame_records(self, records: list[dict], frame: Frame) -> None:
        """All of one frame's prediction records (one per region, or the whole frame's one), in order.
        The publisher calls this; a sink that can do better than one record at a time overrides it."""
        for record in records:
            self.prediction(record, frame)

    def stats(self, line: dict) -> None:
        pass

    def model_changed(self, model_info: dict[str, str]) -> None:
        """A reload swapped the model (same keys as SinkContext.model_info)."""

    def regions_changed(self, regions: tuple) -> None:
        """A reload changed the regions' boxes, models or thresholds (their names stay): what the sink
        knows of them (SinkContext.regions) follows."""
        if getattr(self, "context", None) is not None:
            self.context = dataclasses.replace(self.context, regions=tuple(regions))

    def event(self, event: dict) -> None:
        """A region's state changed (events.py's event dict); called in frame order, after its predictions."""

    def close(self) -> None:
        pass
