"""LiteRT (TensorFlow Lite) interpreters for `.tflite` models: the optional second engine.

`ai-edge-litert` is an extra (requirements-litert.txt, `./install.sh --litert`), imported only when a
`.tflite` model is loaded; without it that model is one line saying how to install it, exit 2. Not the
older `tflite-runtime`: it stops at CPython 3.11 and fails under numpy 2.

A `.tflite` file is described like an ONNX one: its sidecar (`model.yaml` beside `model.tflite`), else
the config's `model_spec`, else what the file itself says (`file_spec`): input shape and type, raw
pixels for an integer input, [-1, 1] for a float one, labels embedded in the file (TFLite metadata
packs them as a zip appended to the flatbuffer) or ImageNet's for 1000/1001 classes. The file's own
quantisation is applied both ways: a float32 tensor for a uint8/int8 input is quantised with the
input's scale and zero point, raw pixels for an int8 input are shifted by 128, and an integer output
is dequantised with its own scale and zero point before the postprocessor sees it.

An interpreter is not thread-safe: every lane gets its own (`shareable` is False). A batch-1 model
runs a batch one frame at a time; a resizable batch axis (shape_signature -1) is resized to the batch.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.engines import base
from edge_runtime.engines import spec as ms
from edge_runtime.engines.base import TensorInfo
from edge_runtime.util import safeio
from edge_runtime.util.errors import ConfigError, ModelError, first_line
from edge_runtime.util.schema import field

log = logging.getLogger(__name__)

INSTALL_HINT = ("LiteRT is not installed, and this is a .tflite model: install it with `./install.sh --litert` "
                "(a service: `sudo ./install.sh --litert`; or `pip install -r requirements-litert.txt` in the "
                "daemon's virtual environment), or use an .onnx model")

_TYPES = {np.float32: "float32", np.uint8: "uint8", np.int8: "int8"}


@dataclass(frozen=True)
class LiteRTOptions:
    """The `litert:` section of the config: what only this engine has (threads are the daemon's `threads`)."""
    xnnpack: bool = field(True, help="run through LiteRT's XNNPACK delegate (faster on ARM and x86); false: "
                                      "LiteRT's built-in kernels only")


def _interpreter_module(model_path: str):
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise ModelError(model_path, INSTALL_HINT) from None
    return interpreter


def embedded_labels(model_path: str) -> tuple[str, ...] | None:
    """Labels a .tflite carries in its metadata's associated files (a zip appended to the flatbuffer):
    the member whose name says 'label', else the only .txt member. None without any."""
    try:
        if not zipfile.is_zipfile(model_path):
            return None
        with zipfile.ZipFile(model_path) as archive:
            members = [m for m in archive.infolist()[:64] if m.filename.lower().endswith(".txt")
                       and m.file_size <= safeio.MAX_TEXT_BYTES]
            named = [m for m in members if "label" in m.filename.lower()]
            chosen = named[0] if named else (members[0] if len(members) == 1 else None)
            if chosen is None:
                return None
            with archive.open(chosen) as f:
                text = f.read(safeio.MAX_TEXT_BYTES + 1)[:safeio.MAX_TEXT_BYTES].decode("utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, RuntimeError, NotImplementedError):
        return None         # not labels we can read: the file's own description just has none
    return ms.labels_from_text(text) or None


def file_spec(model_path: str, shape: list[int], dtype: str, classes_hint: int | None) -> ms.ModelSpec:
    """What the file itself says, for a .tflite without a sidecar or `model_spec`: its input size and
    layout, raw pixels for an integer input and [-1, 1] (TFLite's MobileNets, Teachable Machine) for a
    float one, RGB, a straight resize (the zoos' models were trained on squashed whole images)."""
    if len(shape) != 4:
        raise ModelError(model_path, f"input has rank {len(shape)} {shape}; an image classifier takes a rank-4 "
                         "tensor (N,H,W,C)")
    layout = "nchw" if shape[1] == 3 and shape[3] != 3 else "nhwc"
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    if h <= 0 or w <= 0:
        raise ModelError(model_path, f"its input size is not fixed ({shape}); give it in a sidecar "
                         f"{ms.sidecar_path(model_path)} (input: size: [H, W])")
    if dtype == "float32":
        inp = ms.InputSpec(size=(h, w), layout=layout, dtype="float32", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    else:
        inp = ms.InputSpec(size=(h, w), layout=layout, dtype="uint8")
    labels, offset = embedded_labels(model_path), 0
    if labels is None and classes_hint in (1000, 1001):
        labels = ms.read_labels(ms.DEFAULT_LABELS_FILE)
        offset = classes_hint - len(labels)           # 1001: index 0 is "background"
    return ms.ModelSpec(input=inp, labels=labels, label_offset=max(0, offset), output="probabilities",
                        output_scale=None, origin=f"{model_path} (the file itself)")


class LiteRTEngine:
    """One LiteRT Interpreter. `run(tensor)` returns the first output, dequantised, as a flat array."""

    kind = "litert"

    def __init__(self, model_path: str, threads: int = 0, *, spec: ms.ModelSpec | None = None,
                 config_spec: Any = None, spec_origin: str | None = None,
                 options: LiteRTOptions | None = None, _checked_outputs: int | None = None, **_ignored):
        """As onnxruntime's Engine; `options` the config's `litert:` section. Session options of
        onnxruntime's (memory pattern, spin-waiting) do not apply and are ignored."""
        import os

        interpreter = _interpreter_module(model_path)
        base.check_model_file(model_path, "a .tflite")
        self.path = model_path
        self.threads = threads or os.cpu_count() or 1
        self.options = options or LiteRTOptions()
        resolver = interpreter.OpResolverType.AUTO if self.options.xnnpack \
            else interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = interpreter.Interpreter(model_path=model_path, num_threads=self.threads,
                                                       experimental_op_resolver_type=resolver)
        except MemoryError:
            raise ModelError(model_path, "not enough memory to load it") from None
        except Exception as exc:
            raise ModelError(model_path, f"LiteRT cannot load it: {first_line(exc)[:200]}") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ModelError(model_path, f"expected one input, the model has {len(inputs)}: "
                             f"{', '.join(i['name'] for i in inputs)}")
        if not outputs:
            raise ModelError(model_path, "it has no output; expected one tensor of class scores")
        self._in, self._out = inputs[0], outputs[0]
        signature = [int(d) for d in self._in.get("shape_signature", self._in["shape"])]
        self.input = TensorInfo(self._in["name"], tuple(d if d > 0 else None for d in signature))
        self.output = TensorInfo(self._out["name"], tuple(int(d) for d in self._out["shape"]))
        model_dtype = _TYPES.get(np.dtype(self._in["dtype"]).type)
        if model_dtype is None:
            raise ModelError(model_path, f"input '{self.input.name}' is {np.dtype(self._in['dtype']).name}; only "
                             "float32, uint8 and int8 image tensors are supported")
        self._model_dtype = model_dtype
        self._in_scale, self._in_zero = self._in.get("quantization", (0.0, 0))
        self._out_scale, self._out_zero = self._out.get("quantization", (0.0, 0))
        out_classes = int(np.prod(self._out["shape"][1:])) if len(self._out["shape"]) > 1 else None
        if spec is None:
            spec = self._resolve(signature, config_spec, spec_origin, out_classes)
        self.spec = spec
        self._batch = 0                           # the batch the input is allocated for
        self.num_outputs = self._check(signature) if _checked_outputs is None else _checked_outputs
        self.input_name = self.input.name
        self.output_names = [self.output.name]

    # -- the description -------------------------------------------------------------------------
    def _resolve(self, signature: list[int], config_spec, spec_origin, out_classes) -> ms.ModelSpec:
        feed = "uint8" if self._model_dtype == "int8" else self._model_dtype
        try:
            spec = ms.resolve(self.path, {}, config_spec, spec_origin,
                              default=lambda: file_spec(self.path, signature, feed, out_classes))
        except ConfigError as exc:
            raise ModelError(self.path, f"its description is invalid: {exc}") from None
        if spec.labels is None:
            labels = embedded_labels(self.path)
            if labels is not None:
                spec = dataclasses.replace(spec, labels=labels)
        if spec.output_scale is not None and self._out_scale:
            log.warning("model %s: its output carries its own quantisation (scale %g, zero point %d), which is "
                        "applied; the description's output_scale %g is not", self.path, self._out_scale,
                        self._out_zero, spec.output_scale)
            spec = dataclasses.replace(spec, output_scale=None)
        return spec

    def _check(self, signature: list[int]) -> int:
        hint = base.no_description_hint(self.path, self.spec)
        want = self.spec.input.dtype
        # The tensor the preprocessor makes may differ from the model's type where the file says how to
        # convert it: float32 for a quantised integer input, raw pixels for an int8 one.
        quantised = self._model_dtype in ("uint8", "int8") and self._in_scale > 0
        accepted = {"float32": {"float32"}, "uint8": {"uint8"} | ({"float32"} if quantised else set()),
                    "int8": {"uint8"} | ({"float32"} if quantised else set())}[self._model_dtype]
        shown = want if want in accepted else self._model_dtype
        base.check_input(self.path, self.spec, self.input.name, shown, signature, hint)
        base.check_input_size(self.path, self.input_shape(), self.input_dtype())
        batch = 2 if self.batch_axis_dynamic else 1
        blank = np.zeros((batch,) + self.input_shape()[1:], dtype=self.input_dtype())
        try:
            out = self._invoke(blank)
        except MemoryError:
            raise ModelError(self.path, "not enough memory to run it once on a blank image") from None
        except Exception as exc:
            raise ModelError(self.path, f"fails on a blank image: {first_line(exc)[:200]}") from None
        classes = base.probe_rows(self.path, out, batch, self.output.name, self.input.name, "-1")
        if self.spec.origin.endswith("(the file itself)") and out.dtype == np.float32 and not self._out_scale:
            rows = out.reshape(batch, -1)
            if not (np.all(rows >= 0) and np.all(rows <= 1) and np.allclose(rows.sum(axis=1), 1, atol=1e-3)):
                self.spec = dataclasses.replace(self.spec, output="logits")   # not a softmax's output
        base.check_labels(self.path, self.spec, classes)
        base.check_finite_scores(self.path, self.spec, out, batch)
        return classes

    # -- running ---------------------------------------------------------------------------------
    def _feed(self, tensor: np.ndarray) -> np.ndarray:
        """The preprocessor's tensor as the model's input type (the file's own quantisation)."""
        model = self._model_dtype
        if tensor.dtype == np.float32 and model != "float32":
            info = np.iinfo(np.uint8 if model == "uint8" else np.int8)
            q = np.rint(tensor / np.float32(self._in_scale)) + np.float32(self._in_zero)
            return np.clip(q, info.min, info.max).astype(info.dtype)
        if model == "int8":
            return (tensor ^ np.uint8(0x80)).view(np.int8)     # raw pixel p -> p - 128
        return tensor

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        """One interpreter run on `tensor` (its batch allocated first); the output dequantised."""
        n = len(tensor)
        if n != self._batch:
            if self.batch_axis_dynamic or self.input_shape()[1:] != tuple(self._in["shape"][1:]):
                self.interpreter.resize_tensor_input(self._in["index"], [n, *self.input_shape()[1:]], strict=False)
            self.interpreter.allocate_tensors()
            self._batch = n
        self.interpreter.set_tensor(self._in["index"], np.ascontiguousarray(self._feed(tensor)))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._out["index"])
        if self._out_scale and out.dtype != np.float32:
            out = (out.astype(np.float32) - np.float32(self._out_zero)) * np.float32(self._out_scale)
        return out

    @property
    def batch_axis_dynamic(self) -> bool:
        """Whether the model's batch axis can be resized (shape_signature -1)."""
        return self.input.shape[0] is None

    @property
    def shareable(self) -> bool:
        return False            # an Interpreter is not thread-safe: one per lane

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self.run_batch(tensor[:1]).reshape(-1)

    def run_batch(self, tensor: np.ndarray) -> np.ndarray:
        """Images stacked on the first axis -> one row of outputs per image (a batch-1 model: one at a time)."""
        n = len(tensor)
        if self.batch_axis_dynamic or n == 1:
            return self._invoke(tensor).reshape(n, -1)
        return np.stack([self._invoke(tensor[i:i + 1]).reshape(-1) for i in range(n)])

    def warm_up(self, runs: int = 3, batch: int = 1) -> None:
        dummy = np.zeros((batch,) + self.input_shape()[1:], dtype=self.input_dtype())
        for _ in range(runs):
            self.run_batch(dummy)

    def input_shape(self) -> tuple[int, ...]:
        return self.spec.input.tensor_shape(1)

    def input_dtype(self):
        return self.spec.input.np_dtype

    def sibling(self, threads: int) -> "LiteRTEngine":
        return LiteRTEngine(self.path, threads, spec=self.spec, options=self.options,
                            _checked_outputs=self.num_outputs)

    def info(self) -> dict[str, str]:
        return base.info_dict(self)

    def describe(self) -> str:
        quant = []
        if self._in_scale and self._model_dtype != "float32":
            quant.append(f"{self._model_dtype} input (scale {self._in_scale:g}, zero point {self._in_zero})")
        if self._out_scale:
            quant.append(f"output dequantised (scale {self._out_scale:g}, zero point {self._out_zero})")
        engine = "litert" + ("" if self.options.xnnpack else " (no XNNPACK)")
        parts = [self.path, f"spec from {self.spec.origin}", engine, f"{self.num_outputs} outputs",
                 f"{self.threads} thread(s)", *quant]
        return ", ".join(parts)
