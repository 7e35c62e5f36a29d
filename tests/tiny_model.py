"""Small ONNX classifiers that tests build themselves (no torch, no downloads).

- `make_channel_model`: three classes "blue", "green", "red" whose logits are the mean of the
  matching *model input* channel. Fed through the runtime, a pure-red BGR frame must come out
  "red" when the description says rgb and the model reads RGB — it proves colour order, layout
  and label mapping end to end with a model whose right answer is known.
- `make_random_model`: a tiny random-weight conv net, for plumbing (speed, lifecycle, errors).

Run as a script to write one: `python tests/tiny_model.py OUT.onnx [--kind random|channel]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.engines.spec import InputSpec, ModelSpec  # noqa: E402


def _input(name: str, size, layout: str, dtype: str, batch="N"):
    h, w = size
    shape = [batch, 3, h, w] if layout == "nchw" else [batch, h, w, 3]
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.UINT8
    return helper.make_tensor_value_info(name, elem, shape)


def _to_nchw_float(layout: str, dtype: str, nodes: list, x: str = "input") -> str:
    if dtype == "uint8":
        nodes.append(helper.make_node("Cast", [x], ["x_f"], to=TensorProto.FLOAT))
        x = "x_f"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [x], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    return x


def _save(graph, path: Path, spec: ModelSpec, info: dict, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edge_runtime tests")
    model.ir_version = 8
    for key, value in spec.to_metadata(**info).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def strip_metadata(path: Path) -> None:
    """Remove the embedded description, as for a foreign model that needs a sidecar."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))


def make_channel_model(path: Path, *, size=(32, 32), layout="nchw", dtype="float32", color="rgb",
                       resize=None, embed=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> Path:
    """Logits [c0, c1, c2] * 10 = per-channel means of the model input; labels name the model's channels."""
    nodes: list = []
    x = _to_nchw_float(layout, dtype, nodes)
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
              helper.make_node("Mul", ["flat", "gain"], ["logits"])]
    gain = numpy_helper.from_array(np.array([10.0 if dtype == "float32" else 10.0 / 255], np.float32), "gain")
    graph = helper.make_graph(nodes, "channel_means", [_input("input", size, layout, dtype)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              initializer=[gain])
    labels = ("red", "green", "blue") if color == "rgb" else ("blue", "green", "red")
    spec = ModelSpec(input=InputSpec(size=tuple(size), resize=resize, color=color, layout=layout, dtype=dtype,
                                     mean=mean, std=std),
                     labels=labels, label_offset=0, output="logits", output_scale=None, origin="test")
    path = _save(graph, path, spec, {"arch": "channel-means test net", "weights": "fixed"})
    if not embed:
        strip_metadata(path)
    return path


def make_random_model(path: Path, *, size=(224, 224), classes=1000, layout="nchw", dtype="float32",
                      channels=16, seed=0, resize=256, labels: tuple[str, ...] | None = None,
                      embed=True) -> Path:
    """A small random conv net: conv 3x3/2 → ReLU → conv 3x3/2 → ReLU → global pool → dense."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    x = _to_nchw_float(layout, dtype, nodes)
    w1 = numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), "w2")
    fc = numpy_helper.from_array((rng.standard_normal((channels, classes)) * 0.05).astype(np.float32), "fc")
    nodes += [helper.make_node("Conv", [x, "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"]),
              helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
              helper.make_node("MatMul", ["flat", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny_random", [_input("input", size, layout, dtype)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              initializer=[w1, w2, fc])
    if labels is None:
        labels = tuple(f"class {i}" for i in range(classes))
    spec = ModelSpec(input=InputSpec(size=tuple(size), resize=resize, layout=layout, dtype=dtype),
                     labels=labels, label_offset=0, output="logits", output_scale=None, origin="test")
    info = {"arch": "tiny random test net", "weights": f"untrained (random init, seed {seed})"}
    path = _save(graph, path, spec, info)
    if not embed:
        strip_metadata(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--kind", choices=["random", "channel"], default="random")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    args = ap.parse_args()
    if args.kind == "random":
        make_random_model(args.output, size=tuple(args.size or (224, 224)))
    else:
        make_channel_model(args.output, size=tuple(args.size or (32, 32)))
    print(args.output)


if __name__ == "__main__":
    main()
