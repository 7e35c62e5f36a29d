"""The engine of each lane. Here, beside the engine, rather than in core/plan.py: the region watcher
(watch/, below core/) needs it too, and the rule is one session per lane of several threads."""

from __future__ import annotations

from edge_runtime.engines.ort import Engine


def lane_engines(engine: Engine, lanes: int) -> list[Engine]:
    """The engine of each lane: one-thread lanes share `engine`'s session; lanes of several threads get
    a session each (a shared thread pool would serialise their parallel sections)."""
    if engine.threads == 1:
        return [engine] * lanes
    return [engine] + [engine.sibling(engine.threads) for _ in range(lanes - 1)]
