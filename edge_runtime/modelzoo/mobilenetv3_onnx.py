"""MobileNetV3 straight to ONNX from numpy weights: no PyTorch, on the device itself.

The graph follows mobilenetv3_arch's tables and reads a dict of numpy arrays in torchvision's
state-dict layout (features.0.0.weight, features.0.1.running_mean, ..., classifier.3.bias), the
layout models/mobilenetv3.py and torchvision share. BatchNorm is folded into the convolutions (what
torch.onnx.export's constant folding does too). The file gets the same metadata models/export.py
writes (the runtime's model description with the labels inline, arch, weights, exporter, opset), so
the daemon needs no sidecar.

Also: torchvision's initialisation for a model without weights (random_state_dict), with its
BatchNorm statistics measured on synthetic images (calibrate_batchnorm) so that an untrained network
still answers differently for different frames instead of ~1e-9 logits everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Sequence

import numpy as np

from edge_runtime.engines import spec as ms
from .mobilenetv3_arch import BN_EPS, Network

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
MIN_OPSET = 14          # HardSwish
IR_VERSION = 8          # opset 17's IR version: readable by every onnxruntime the daemon supports
MIN_INPUT = 32          # five stride-2 stages: smaller inputs leave nothing to pool


class WeightsError(ValueError):
    """The weights do not fit the architecture (missing, unexpected or wrongly shaped entries)."""


def eval_spec(input_size: tuple[int, int] = (224, 224), labels: tuple[str, ...] | None = None,
              origin: str = "edge_runtime/modelzoo") -> ms.ModelSpec:
    """torchvision's evaluation recipe at `input_size`: resize the shorter side by 256/224, centre crop,
    RGB, NCHW float32, ImageNet mean/std."""
    h, w = input_size
    if min(h, w) < MIN_INPUT:
        raise ValueError(f"input size {h}x{w} is too small: MobileNetV3 needs at least {MIN_INPUT}x{MIN_INPUT}")
    inp = ms.InputSpec(size=(h, w), resize=round(min(h, w) * 256 / 224), color="rgb", layout="nchw",
                       dtype="float32", mean=ms.IMAGENET_MEAN, std=ms.IMAGENET_STD, interpolation="linear")
    return ms.ModelSpec(input=inp, labels=tuple(labels) if labels else None, label_offset=0, output="logits",
                        output_scale=None, origin=origin)


# -- the layer plan: every parameterised layer, in order, with its state-dict prefix -------------------

@dataclasses.dataclass(frozen=True)
class ConvBN:
    prefix: str          # <prefix>.0.weight (conv, no bias), <prefix>.1.* (BatchNorm)
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    groups: int
    act: str | None      # "RE", "HS" or None


def _conv_bns(net: Network) -> Iterator[ConvBN]:
    yield ConvBN("features.0", 3, net.stem_ch, 3, 2, 1, "HS")
    for i, b in enumerate(net.bnecks, start=1):
        j = 0
        if b.exp_ch != b.in_ch:
            yield ConvBN(f"features.{i}.block.{j}", b.in_ch, b.exp_ch, 1, 1, 1, b.act)
            j += 1
        yield ConvBN(f"features.{i}.block.{j}", b.exp_ch, b.exp_ch, b.kernel, b.stride, b.exp_ch, b.act)
        j += 2 if b.se else 1
        yield ConvBN(f"features.{i}.block.{j}", b.exp_ch, b.out_ch, 1, 1, 1, None)
    yield ConvBN(f"features.{len(net.bnecks) + 1}", net.bnecks[-1].out_ch, net.last_ch, 1, 1, 1, "HS")


def expected_shapes(net: Network) -> dict[str, tuple[int, ...]]:
    """Every state-dict entry torchvision's model of this shape has, in its order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(c: ConvBN) -> None:
        shapes[f"{c.prefix}.0.weight"] = (c.out_ch, c.in_ch // c.groups, c.kernel, c.kernel)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{c.prefix}.1.{name}"] = (c.out_ch,)
        shapes[f"{c.prefix}.1.num_batches_tracked"] = ()

    plan = {c.prefix: c for c in _conv_bns(net)}
    conv_bn(plan["features.0"])
    for i, b in enumerate(net.bnecks, start=1):
        j = 0
        if b.exp_ch != b.in_ch:
            conv_bn(plan[f"features.{i}.block.{j}"])
            j += 1
        conv_bn(plan[f"features.{i}.block.{j}"])
        j += 1
        if b.se:
            p = f"features.{i}.block.{j}"
            shapes[f"{p}.fc1.weight"] = (b.se_channels, b.exp_ch, 1, 1)
            shapes[f"{p}.fc1.bias"] = (b.se_channels,)
            shapes[f"{p}.fc2.weight"] = (b.exp_ch, b.se_channels, 1, 1)
            shapes[f"{p}.fc2.bias"] = (b.exp_ch,)
            j += 1
        conv_bn(plan[f"features.{i}.block.{j}"])
    conv_bn(plan[f"features.{len(net.bnecks) + 1}"])
    shapes["classifier.0.weight"] = (net.hidden, net.last_ch)
    shapes["classifier.0.bias"] = (net.hidden,)
    shapes["classifier.3.weight"] = (net.num_classes, net.hidden)
    shapes["classifier.3.bias"] = (net.num_classes,)
    return shapes


def fit_problems(have: Mapping[str, Sequence[int]], want: Mapping[str, Sequence[int]]) -> list[str]:
    """What keeps weights of shapes `have` from loading strictly where `want` is expected: missing and
    unexpected keys, other shapes (one phrase each, with an example). Also models/checkpoint.load_into's."""
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {list(have[k])} vs {list(v)}" for k, v in want.items()
              if k in have and tuple(have[k]) != tuple(v)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        problems.append(f"{len(shapes)} with another shape (e.g. {shapes[0]})")
    return problems


def check_weights(state: Mapping[str, np.ndarray], net: Network) -> None:
    """WeightsError naming what does not fit (as models/checkpoint.load_into words it)."""
    want = expected_shapes(net)
    problems = fit_problems({k: np.shape(v) for k, v in state.items()}, want)
    if problems:
        raise WeightsError(f"the weights do not fit {net.arch} with {net.num_classes} classes: " + "; ".join(problems))
    bad = [k for k in want if k in state and not np.all(np.isfinite(np.asarray(state[k], dtype=np.float64)))]
    if bad:
        raise WeightsError(f"the weights hold NaN or infinite values (e.g. {bad[0]})")


# -- the graph --------------------------------------------------------------------------------------

class _Graph:
    """Collects nodes and initializers with unique names."""

    def __init__(self, state: Mapping[str, np.ndarray], fold_bn: bool):
        self.state = state
        self.fold_bn = fold_bn
        self.nodes: list = []
        self.inits: list = []
        self.bn_inputs: list[tuple[str, str]] = []   # (prefix, tensor name) when BN stays a node
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def act(self, x: str, act: str | None, hint: str) -> str:
        if act == "RE":
            return self.node("Relu", [x], f"{hint}_relu")
        if act == "HS":
            return self.node("HardSwish", [x], f"{hint}_hswish")
        return x

    def conv_bn(self, x: str, c: ConvBN) -> str:
        w = np.asarray(self.state[f"{c.prefix}.0.weight"], dtype=np.float64)
        bn = {k: np.asarray(self.state[f"{c.prefix}.1.{k}"], dtype=np.float64)
              for k in ("weight", "bias", "running_mean", "running_var")}
        attrs = dict(kernel_shape=[c.kernel, c.kernel], strides=[c.stride, c.stride], group=c.groups,
                     pads=[(c.kernel - 1) // 2] * 4)
        if self.fold_bn:
            scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
            wf = self.const(f"{c.prefix}.weight", w * scale[:, None, None, None])
            bf = self.const(f"{c.prefix}.bias", bn["bias"] - bn["running_mean"] * scale)
            y = self.node("Conv", [x, wf, bf], f"{c.prefix}.conv", **attrs)
        else:
            conv = self.node("Conv", [x, self.const(f"{c.prefix}.0.weight", w)], f"{c.prefix}.conv", **attrs)
            self.bn_inputs.append((c.prefix, conv))
            # Mean and variance are graph inputs here: calibrate_batchnorm feeds them step by step.
            y = self.node("BatchNormalization", [conv, self.const(f"{c.prefix}.1.weight", bn["weight"]),
                                                 self.const(f"{c.prefix}.1.bias", bn["bias"]),
                                                 f"{c.prefix}.1.running_mean", f"{c.prefix}.1.running_var"],
                          f"{c.prefix}.bn", epsilon=BN_EPS)
        return self.act(y, c.act, c.prefix)

    def se(self, x: str, prefix: str) -> str:
        pooled = self.node("GlobalAveragePool", [x], f"{prefix}.pool")
        s = self.node("Conv", [pooled, self.const(f"{prefix}.fc1.weight", self.state[f"{prefix}.fc1.weight"]),
                               self.const(f"{prefix}.fc1.bias", self.state[f"{prefix}.fc1.bias"])],
                      f"{prefix}.fc1", kernel_shape=[1, 1])
        s = self.node("Relu", [s], f"{prefix}.relu")
        s = self.node("Conv", [s, self.const(f"{prefix}.fc2.weight", self.state[f"{prefix}.fc2.weight"]),
                               self.const(f"{prefix}.fc2.bias", self.state[f"{prefix}.fc2.bias"])],
                      f"{prefix}.fc2", kernel_shape=[1, 1])
        # hard-sigmoid(x) = ReLU6(x + 3) / 6 = clip(x/6 + 1/2, 0, 1): PyTorch's nn.Hardsigmoid exactly.
        gate = self.node("HardSigmoid", [s], f"{prefix}.hsigmoid", alpha=1.0 / 6.0, beta=0.5)
        return self.node("Mul", [x, gate], f"{prefix}.scale")

    def linear(self, x: str, prefix: str) -> str:
        return self.node("Gemm", [x, self.const(f"{prefix}.weight", self.state[f"{prefix}.weight"]),
                                  self.const(f"{prefix}.bias", self.state[f"{prefix}.bias"])],
                         prefix, transB=1)


def build(state: Mapping[str, np.ndarray], net: Network, spec: ms.ModelSpec, info: Mapping[str, str], *,
          opset: int = DEFAULT_OPSET, fold_bn: bool = True):
    """The ONNX ModelProto of `net` with `state`'s weights, described by `spec` (its metadata) and `info`
    (arch, weights, exporter... as metadata_props). The batch axis is dynamic; H, W are spec's.
    Raises WeightsError when the weights do not fit."""
    import onnx
    from onnx import TensorProto, helper

    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset {opset} is not supported: choose {MIN_OPSET}..{onnx.defs.onnx_opset_version()}")
    if spec.input.layout != "nchw" or spec.input.dtype != "float32":
        raise ValueError("the ONNX builder makes float32 NCHW models")
    check_weights(state, net)
    g = _Graph(state, fold_bn)
    plan = {c.prefix: c for c in _conv_bns(net)}
    x = g.conv_bn(INPUT_NAME, plan["features.0"])
    for i, b in enumerate(net.bnecks, start=1):
        block_in, j = x, 0
        if b.exp_ch != b.in_ch:
            x = g.conv_bn(x, plan[f"features.{i}.block.{j}"])
            j += 1
        x = g.conv_bn(x, plan[f"features.{i}.block.{j}"])
        j += 1
        if b.se:
            x = g.se(x, f"features.{i}.block.{j}")
            j += 1
        x = g.conv_bn(x, plan[f"features.{i}.block.{j}"])
        if b.residual:
            x = g.node("Add", [block_in, x], f"features.{i}.add")
    x = g.conv_bn(x, plan[f"features.{len(net.bnecks) + 1}"])
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    x = g.node("HardSwish", [g.linear(x, "classifier.0")], "classifier.1")
    # classifier.2 is Dropout: nothing at inference.
    logits = g.linear(x, "classifier.3")
    g.nodes.append(helper.make_node("Identity", [logits], [OUTPUT_NAME], name=OUTPUT_NAME))

    h, w = spec.input.size
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, h, w])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", net.num_classes])]
    if not fold_bn:
        for prefix, tensor in g.bn_inputs:
            ch = plan[prefix].out_ch
            inputs += [helper.make_tensor_value_info(f"{prefix}.1.{k}", TensorProto.FLOAT, [ch])
                       for k in ("running_mean", "running_var")]
            outputs.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    graph = helper.make_graph(g.nodes, net.arch, inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="edge_runtime.modelzoo", ir_version=IR_VERSION)
    model.doc_string = f"{net.arch} for edge_runtime; see metadata_props"
    for key, value in spec.to_metadata(**info, opset=str(opset)).items():
        model.metadata_props.add(key=key, value=value)
    return model


# -- weights for a model that has none ----------------------------------------------------------------

def random_state_dict(net: Network, seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision's initialisation: Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 / bias 0
    (statistics mean 0, variance 1), linear layers normal(0, 0.01), zero biases."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for key, shape in expected_shapes(net).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.zeros((), np.int64)
        elif key.startswith("classifier.") and key.endswith(".weight"):
            state[key] = rng.normal(0.0, 0.01, shape).astype(np.float32)
        elif len(shape) == 4:          # conv: fan_out = out channels x kernel area (as torch counts it)
            std = np.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
            state[key] = rng.normal(0.0, std, shape).astype(np.float32)
        elif key.endswith((".1.weight", "running_var")):
            state[key] = np.ones(shape, np.float32)
        else:                          # BN bias, running_mean, conv/linear biases
            state[key] = np.zeros(shape, np.float32)
    return state


def synthetic_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random colour fields, normalised as the recipe does: a stand-in for photos when measuring
    BatchNorm statistics (white noise would give the first layers unnaturally large responses)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = np.empty((count, 3, h, w), np.float32)
    mean = np.asarray(ms.IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(ms.IMAGENET_STD, np.float32)[:, None, None]
    for i in range(count):
        cells = int(rng.integers(3, 12))
        img = cv2.resize(rng.random((cells, cells, 3), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img + rng.normal(0, 0.03, img.shape).astype(np.float32), 0, 1)
        out[i] = (img.transpose(2, 0, 1) - mean) / std
    return out


def calibrate_batchnorm(state: Mapping[str, np.ndarray], net: Network, images: np.ndarray) -> dict[str, np.ndarray]:
    """Set every BatchNorm's running mean/variance to what its input has on `images` (N, 3, H, W), layer
    by layer in network order, as a first pass of training would. Returns a new state dict."""
    import onnxruntime as ort

    state = dict(state)
    spec = eval_spec(tuple(images.shape[2:]))
    proto = build(state, net, spec, {}, fold_bn=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    feeds = {INPUT_NAME: images.astype(np.float32)}
    prefixes = [c.prefix for c in _conv_bns(net)]
    for prefix in prefixes:
        feeds[f"{prefix}.1.running_mean"] = np.asarray(state[f"{prefix}.1.running_mean"], np.float32)
        feeds[f"{prefix}.1.running_var"] = np.asarray(state[f"{prefix}.1.running_var"], np.float32)
    outputs = [o.name for o in proto.graph.output][1:]      # the BatchNorms' inputs, in network order
    for prefix, tensor in zip(prefixes, outputs, strict=True):
        (y,) = session.run([tensor], feeds)
        mean = y.mean(axis=(0, 2, 3), dtype=np.float64)
        var = y.var(axis=(0, 2, 3), dtype=np.float64)
        feeds[f"{prefix}.1.running_mean"] = state[f"{prefix}.1.running_mean"] = mean.astype(np.float32)
        feeds[f"{prefix}.1.running_var"] = state[f"{prefix}.1.running_var"] = var.astype(np.float32)
    return state
