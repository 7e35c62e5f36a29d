"""A PyTorch classifier -> a self-describing ONNX file, and the checks run on that file.

The file's metadata_props carry the runtime's model description (edge_runtime.engines.spec.ModelSpec,
the sidecar format with labels inline) plus info items (arch, weights, exporter, opset...), so the
daemon needs no sidecar. Used by export.py and distill.py.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from edge_runtime.engines import spec as ms

from .common import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, CheckFailed, ToolError, file_size_mb, ort_session  # noqa: F401

# The graph's names and the smallest input, as the torch-free builder has them (one definition).
from edge_runtime.modelzoo.mobilenetv3_onnx import INPUT_NAME, OUTPUT_NAME, eval_spec  # noqa: E402,F401
PARITY_TOL = 1e-4        # max abs difference for outputs within +-1; scaled up with larger logits
PARITY_REL_TOL = 1e-3    # and never more than this fraction of the output range (tiny untrained logits)


@dataclasses.dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    max_abs_output: float

    @property
    def limit(self) -> float:
        """1e-4 for logits within +-1; float32 rounding grows with the values, so beyond that the limit
        is 1e-4 of the largest logit. For near-zero outputs, at most 1e-3 of the largest one."""
        return min(PARITY_TOL * max(1.0, self.max_abs_output), PARITY_REL_TOL * self.max_abs_output)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit      # False for NaN too

    def __str__(self) -> str:
        return f"{self.max_abs_diff:.2e} (outputs up to {self.max_abs_output:.2g}, limit {self.limit:.1e})"


def imagenet_labels() -> tuple[str, ...]:
    return ms.read_labels(ms.DEFAULT_LABELS_FILE)


def make_spec(input_size: tuple[int, int] = (224, 224), labels: tuple[str, ...] | None = None) -> ms.ModelSpec:
    """torchvision's evaluation recipe at `input_size`: resize the shorter side by 256/224, centre crop,
    RGB, NCHW float32, ImageNet mean/std (written once, in edge_runtime.modelzoo, for fetch-model too)."""
    try:
        return eval_spec(tuple(input_size), labels, origin="models/exporting.py")
    except ValueError as exc:       # too small for MobileNetV3: said once, in eval_spec
        raise ToolError(str(exc)) from None


class FusedPreprocess(nn.Module):
    """uint8 NHWC pixels in, the wrapped network's output out: layout and normalisation in the graph.

    Mathematically the runtime's Preprocessor for a float NCHW model: (x/255 - mean)/std = x*scale + bias.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        mean_t = torch.tensor(mean, dtype=torch.float64)
        std_t = torch.tensor(std, dtype=torch.float64)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bias", (-mean_t / std_t).float().view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)   # transpose the uint8 tensor: 4x less to move
        return self.model(x * self.scale + self.bias)


def fuse_preprocess(model: nn.Module, spec: ms.ModelSpec) -> tuple[nn.Module, ms.ModelSpec]:
    """Wrap a float NCHW model so it takes uint8 NHWC pixels; return it and its description."""
    if spec.input.layout != "nchw" or spec.input.dtype != "float32":
        raise ToolError("--fuse-preprocess needs a float32 NCHW model")
    fused = FusedPreprocess(model, spec.input.mean, spec.input.std)
    # Raw 0-255 pixels in the spec's colour order; mean/std are inside the graph, so none outside.
    inp = dataclasses.replace(spec.input, layout="nhwc", dtype="uint8", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return fused, dataclasses.replace(spec, input=inp)


def input_shape(spec: ms.ModelSpec, batch: int = 1) -> tuple[int, int, int, int]:
    h, w = spec.input.size
    return (batch, 3, h, w) if spec.input.layout == "nchw" else (batch, h, w, 3)


def example_input(spec: ms.ModelSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Random input in the model's own input space (normalised floats, or raw pixels)."""
    shape = input_shape(spec, batch)
    if spec.input.dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def export_onnx(model: nn.Module, spec: ms.ModelSpec, path: str | Path, *, info: Mapping[str, str],
                opset: int = DEFAULT_OPSET) -> None:
    """Trace `model` (which takes input in `spec`'s layout/dtype) to ONNX with a dynamic batch axis,
    and write `spec` and `info` into the file's metadata_props."""
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ToolError(f"--opset {opset} is not supported: choose {MIN_OPSET}..{MAX_OPSET}")
    path = Path(path)
    model = model.eval()
    dummy = torch.from_numpy(example_input(spec, 1, np.random.default_rng(0)))
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export, but it is the one
        # that handles opset 11 and gives plain, well-optimised graphs for convolutional nets.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in spec.to_metadata(**info, opset=str(opset)).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{info.get('arch', 'classifier')} for edge_runtime; see metadata_props"
    onnx.save(proto, str(path))


def verify_onnx(path: str | Path, model: nn.Module, spec: ms.ModelSpec, *, batches=(1, 4),
                seed: int = 0) -> dict[int, Parity]:
    """onnx.checker, the embedded description, then onnxruntime vs PyTorch on random inputs.

    Returns {batch: Parity}; raises CheckFailed when a difference is above its limit (Parity.limit).
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise CheckFailed(f"{path}: onnx.checker rejects the file: {exc}") from None
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    embedded = ms.from_metadata(props, str(path))
    if embedded is None or embedded.to_document() != spec.to_document():
        raise CheckFailed(f"{path}: the description in its metadata does not match what was exported")

    session = ort_session(path)
    rng = np.random.default_rng(seed)
    model = model.eval()
    result: dict[int, Parity] = {}
    for batch in batches:
        x = example_input(spec, batch, rng)
        got = session.run(None, {INPUT_NAME: x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise CheckFailed(f"{path}: onnxruntime output shape {got.shape} != PyTorch {want.shape} at batch {batch}")
        result[batch] = Parity(float(np.abs(got - want).max()), float(np.abs(want).max()))
    if not all(p.ok for p in result.values()):
        detail = ", ".join(f"batch {b}: {p}" for b, p in result.items())
        raise CheckFailed(f"{path}: onnxruntime and PyTorch disagree: {detail}")
    return result


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one image (what papers report)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def summary(model: nn.Module, spec: ms.ModelSpec, path: str | Path, network: nn.Module | None = None) -> str:
    """One line: parameters, MACs at the export size, file size. `network` is the bare float model."""
    network = network if network is not None else model
    h, w = spec.input.size
    return (f"params {count_params(network) / 1e6:.2f} M, MACs {count_macs(network, (h, w)) / 1e6:.1f} M "
            f"at {h}x{w}, file {file_size_mb(path):.2f} MB")
