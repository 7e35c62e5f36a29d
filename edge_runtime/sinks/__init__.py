"""Sinks, registered by key: a new sink is one file plus one entry in REGISTRY.

Each entry builds its sink from the daemon's config (its own typed section), or returns None when
that sink is not enabled. Optional sinks import their module (and its libraries) only when enabled.
"""

from __future__ import annotations

from typing import Callable

from edge_runtime.core.sink import OutputClosed, Sink, SinkContext
from .log import LogSink
from .stdout import StdoutSink


def _stdout(cfg) -> Sink:
    return StdoutSink(predictions=not cfg.quiet_predictions)


def _log(cfg) -> Sink:
    return LogSink(predictions=cfg.log.predictions)


def _http(cfg) -> Sink | None:
    if not cfg.http.listen:
        return None
    from edge_runtime.web.http import HttpSink
    return HttpSink(cfg.http)


def _mqtt(cfg) -> Sink | None:
    if not cfg.mqtt.url:
        return None
    from .mqtt import MqttSink
    return MqttSink(cfg.mqtt, cfg.publish)


REGISTRY: dict[str, Callable[[object], Sink | None]] = {"stdout": _stdout, "log": _log, "http": _http, "mqtt": _mqtt}


def build_sinks(cfg) -> list[Sink]:
    """The enabled sinks, constructed (not started), in registry order."""
    return [sink for make in REGISTRY.values() if (sink := make(cfg)) is not None]


__all__ = ["OutputClosed", "Sink", "SinkContext", "LogSink", "StdoutSink", "REGISTRY", "build_sinks"]
