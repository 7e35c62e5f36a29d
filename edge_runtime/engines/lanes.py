"""The engine of each lane. Here, beside the engines, rather than in core/plan.py: the region watcher
(watch/, below core/) needs it too."""

from __future__ import annotations

from edge_runtime.engines.base import Engine


def lane_engines(engine: Engine, lanes: int) -> list[Engine]:
    """The engine of each lane: one-thread lanes share `engine`'s session where the engine allows it
    (onnxruntime); lanes of several threads get a session each (a shared thread pool would serialise their
    parallel sections), as does every lane of an engine that is not thread-safe (a LiteRT interpreter)."""
    if engine.shareable:
        return [engine] * lanes
    return [engine] + [engine.sibling(engine.threads) for _ in range(lanes - 1)]
