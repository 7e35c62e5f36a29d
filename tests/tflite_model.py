"""Small .tflite classifiers that tests build themselves, with LiteRT's own flatbuffer schema (no TensorFlow).

`make_channel_tflite`: like tiny_model.make_channel_model, three classes whose scores are a softmax of the
mean of each *model input* channel (R, G, B for an RGB model): a pure-red frame must come out as class 0
when the description says rgb. Float32 NHWC input, what a Teachable Machine export takes ([-1, 1]).

Needs ai-edge-litert (its schema_py_generated module); the tests that use it skip without it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

LITERT_MISSING = ("ai-edge-litert is not installed: ./install.sh --dev --litert "
                  "(or pip install -r requirements-litert.txt)")


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def make_channel_tflite(path: Path, size=(32, 32), *, batch_dynamic: bool = False, beta: float = 20.0) -> Path:
    import flatbuffers                 # ai-edge-litert's dependency
    from ai_edge_litert import schema_py_generated as s

    h, w = size

    def tensor(shape, kind, buffer, name, signature=None):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), kind, buffer, name
        t.shapeSignature = list(signature) if signature is not None else None
        return t

    def code(op):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = op, op, 1
        return c

    buffers = [s.BufferT(), s.BufferT(), s.BufferT(), s.BufferT(), s.BufferT()]
    buffers[2].data = np.array([1, 2], np.int32).tobytes()          # MEAN over H and W
    graph = s.SubGraphT()
    graph.tensors = [
        tensor([1, h, w, 3], s.TensorType.FLOAT32, 1, "image", [-1 if batch_dynamic else 1, h, w, 3]),
        tensor([2], s.TensorType.INT32, 2, "axes"),
        tensor([1, 3], s.TensorType.FLOAT32, 3, "means", [-1 if batch_dynamic else 1, 3]),
        tensor([1, 3], s.TensorType.FLOAT32, 4, "scores", [-1 if batch_dynamic else 1, 3]),
    ]
    graph.inputs, graph.outputs = [0], [3]
    mean = s.OperatorT()
    mean.opcodeIndex, mean.inputs, mean.outputs = 0, [0, 1], [2]
    mean.builtinOptionsType, mean.builtinOptions = s.BuiltinOptions.ReducerOptions, s.ReducerOptionsT()
    mean.builtinOptions.keepDims = False
    softmax = s.OperatorT()
    softmax.opcodeIndex, softmax.inputs, softmax.outputs = 1, [2], [3]
    softmax.builtinOptionsType, softmax.builtinOptions = s.BuiltinOptions.SoftmaxOptions, s.SoftmaxOptionsT()
    softmax.builtinOptions.beta = beta
    graph.operators = [mean, softmax]
    graph.name = "main"
    model = s.ModelT()
    model.version, model.description = 3, "edge_runtime tests: channel means"
    model.operatorCodes = [code(s.BuiltinOperator.MEAN), code(s.BuiltinOperator.SOFTMAX)]
    model.subgraphs, model.buffers = [graph], buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(builder.Output()))
    return path


def embed_labels(path: Path, labels: list[str], name: str = "labels.txt") -> Path:
    """Append the labels as TFLite metadata packs associated files: a zip after the flatbuffer."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(name, "\n".join(labels) + "\n")
    return path
