"""Engines, registered by key: a new engine (another runtime, an accelerator) is one module plus one
entry in REGISTRY, in the style of the sinks (edge_runtime/sinks/__init__.py). docs/ENGINES.md says
what an engine must provide and how it is tested.

The engine is chosen by the model file's content, not its name: a `.tflite` flatbuffer carries the
identifier `TFL3` at bytes 4..8, an ONNX file is a protobuf ModelProto (its first byte the tag of one
of ModelProto's fields, in practice ir_version's 0x08). A file that is neither is one line, exit 2.
Optional engines import their module (and its library) only when a model of theirs is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge_runtime.engines import base
from edge_runtime.engines.base import Engine
from edge_runtime.util.errors import ModelError

# ModelProto's field tags (field number << 3 | wire type) a serialised model can start with: ir_version (1,
# varint), producer_name/version, domain (2-4), model_version (5), doc_string (6), graph (7), opset_import (8),
# metadata_props (14). Protobuf writers emit fields in number order, so 0x08 is what real files start with.
_ONNX_FIRST_TAGS = frozenset({0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def _is_tflite(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"TFL3"


def _is_onnx(head: bytes) -> bool:
    return len(head) >= 2 and head[0] in _ONNX_FIRST_TAGS


def _onnxruntime(path: str, threads: int, cfg, **kw) -> Engine:
    from .ort import Engine as OrtEngine
    return OrtEngine(path, threads, **kw)


def _litert(path: str, threads: int, cfg, **kw) -> Engine:
    from .litert import LiteRTEngine
    return LiteRTEngine(path, threads, options=getattr(cfg, "litert", None), **kw)


@dataclass(frozen=True)
class EngineEntry:
    detect: Callable[[bytes], bool]       # the file's first 16 bytes -> is it this engine's?
    load: Callable[..., Engine]           # (path, threads, cfg, **Engine keywords) -> a checked, loaded engine
    files: str                            # what its files are, for messages


# Detection order matters only where two could claim a file: TFL3 is a fixed identifier, tried first.
REGISTRY: dict[str, EngineEntry] = {
    "litert": EngineEntry(_is_tflite, _litert, ".tflite (LiteRT / TensorFlow Lite flatbuffer)"),
    "onnxruntime": EngineEntry(_is_onnx, _onnxruntime, ".onnx (ONNX protobuf)"),
}


def detect(path: str) -> str:
    """The REGISTRY key of the engine for the model file at `path`, from its first bytes (ModelError for
    a file no engine takes, or one that cannot be read)."""
    base.check_model_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ModelError(path, f"cannot read it: {exc.strerror or exc}") from None
    for kind, entry in REGISTRY.items():
        if entry.detect(head):
            return kind
    kinds = "; ".join(e.files for e in REGISTRY.values())
    named = {".onnx": "an ONNX model", ".tflite": "a TFLite model"}.get(Path(path).suffix.lower())
    what = f"is not {named}, whatever its name says" if named else "is not a model file this daemon can run"
    raise ModelError(path, f"{what}: its first bytes are neither a TFLite flatbuffer's (TFL3) nor an ONNX "
                     f"protobuf's (truncated, or another format?). It runs: {kinds}")


def load_engine(path: str, threads: int = 0, cfg=None, **kw) -> Engine:
    """The model at `path`, loaded by the engine its content names, checked against its description and
    ready to run. `cfg`: the daemon's config (each engine reads its own typed section, e.g. `litert:`);
    `kw`: Engine keywords (config_spec, spec_origin, mem_pattern, spinning)."""
    return REGISTRY[detect(path)].load(path, threads, cfg, **kw)


__all__ = ["Engine", "EngineEntry", "REGISTRY", "detect", "load_engine"]
