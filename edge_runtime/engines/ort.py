"""The onnxruntime CPU session: loaded, checked against the model's description, warmed up.

The default engine (REGISTRY key "onnxruntime", engines/__init__.py) and the only one the daemon
needs installed: `.onnx` files, chosen by their content. Its options are `threads` and the plan's
memory-pattern and spin-wait choices (core/plan.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.engines import base
from edge_runtime.engines import spec as ms
from edge_runtime.engines.base import MAX_INPUT_BYTES, TensorInfo  # noqa: F401  (MAX_INPUT_BYTES: used to live here)
from edge_runtime.util.errors import ConfigError, ModelError, first_line

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}


def spinning_wanted(default: bool) -> bool:
    """Whether onnxruntime's worker threads spin-wait: `default` unless EDGE_ORT_SPINNING says otherwise."""
    env = os.environ.get("EDGE_ORT_SPINNING")
    return default if env is None else env.strip() not in ("0", "false", "no", "off")


def session_options(threads: int, mem_pattern: bool = True, spinning: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # The memory pattern plans one block per input shape. Separate batched sessions held 15 MB more
    # each with it, for no speed; a session shared by lanes is faster with it (one arena allocation a
    # run for the lanes to contend for, not one per tensor). Measured, docs/BENCHMARKS.md.
    opts.enable_mem_pattern = mem_pattern
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Fatal only: its warnings would be noise in the journal, and what fails is raised and reported by us in
    # one line (its own coloured error log would be a second one).
    opts.log_severity_level = 4
    # Spinning workers answer the next parallel section at once: the fastest back-to-back inference
    # (files), but between a camera's frames they burn a core for nothing (30 fps, 2 threads: 1.05
    # cores spinning, 0.13 not; measured, docs/BENCHMARKS.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning_wanted(spinning) else "0")
    # INT8 on x86 without VNNI: onnxruntime's default u8×s8 kernels add pairs of products in 16 bits
    # and saturate, so an INT8 model's answers change with the CPU (our quantised MobileNetV2 flips a
    # confident 'missile' to 'drilling platform' on an AVX2-only EPYC). This asks for exact u8×u8
    # kernels there; it does nothing on ARM or VNNI CPUs, whose kernels are exact, nor on FP32 models.
    opts.add_session_config_entry("session.x64quantprecision", "1")
    if os.environ.get("EDGE_ORT_KLEIDIAI") == "0":
        # onnxruntime 1.22-1.26 on arm64: KleidiAI convolutions kept a new workspace per distinct input,
        # so RSS grew with every camera frame (fixed upstream in 1.27, which requirements.txt asks for).
        # This is the off switch should a later version regress; MLAS's own kernels then run instead.
        opts.add_session_config_entry("mlas.disable_kleidiai", "1")
    return opts


def ort_message(exc: BaseException) -> str:
    line = first_line(exc)
    # onnxruntime prefixes "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : " — keep the useful tail.
    return line.split(" : ")[-1].strip() or line


class Engine:
    """Wraps one InferenceSession. `run(tensor)` returns the first output as a flat 1-D array."""

    kind = "onnxruntime"

    def __init__(self, model_path: str, threads: int = 0, *, spec: ms.ModelSpec | None = None,
                 config_spec: Any = None, spec_origin: str | None = None, mem_pattern: bool = True,
                 spinning: bool = True, _checked_outputs: int | None = None):
        """`spec`: the model's resolved description; without it, it is resolved here from the model's
        metadata, its sidecar, `config_spec` (a sidecar-format dict whose paths are already resolved,
        named `spec_origin` in messages) or the defaults (model_spec.resolve).
        `_checked_outputs`: for sibling() only, the class count an Engine on the same file and
        description has just checked (the checks and the blank-image run are not repeated)."""
        import onnxruntime as ort

        self._init_args = (model_path, dict(mem_pattern=mem_pattern, spinning=spinning))
        # onnxruntime 1.2x+ tries to persist a telemetry device id; on a read-only system (the unit's
        # ProtectSystem=strict) that is a warning in the journal on every start. We want neither.
        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()
        # Fatal only: its warnings are noise in the journal, and a model it cannot load is reported by us,
        # in one line (its own error log would add a second, coloured one).
        ort.set_default_logger_severity(4)
        self.path = model_path
        self.threads = threads or os.cpu_count() or 1
        path = Path(model_path)
        base.check_model_file(model_path, "an .onnx")
        options = session_options(self.threads, mem_pattern, spinning)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            # onnxruntime's graph optimisations have refused valid models: 1.32 with the exact-INT8 kernels
            # on x86 (session.x64quantprecision) and a TF2 post-training-quantised MobileNetV2, "Attempt to
            # replace the existing tensor". Basic optimisations keep the exact kernels; said once.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            try:
                self.session = ort.InferenceSession(str(path), sess_options=options,
                                                    providers=["CPUExecutionProvider"])
            except Exception:
                raise ModelError(model_path, f"onnxruntime cannot load it: {ort_message(exc)}") from None
            log.warning("model %s: onnxruntime's full graph optimisation failed on it (%s); running it with "
                        "basic optimisations instead (slower)", model_path, ort_message(exc))
        # What the session was given (the environment may have overridden `spinning`).
        self.spinning = options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        if spec is None:
            props = dict(self.session.get_modelmeta().custom_metadata_map or {})
            try:
                spec = ms.resolve(model_path, props, config_spec, spec_origin)
            except ConfigError as exc:
                raise ModelError(model_path, f"its description is invalid: {exc}") from None
        self.spec = spec
        _check_io_counts(self.session, model_path)
        self._input = self.session.get_inputs()[0]
        self._output = self.session.get_outputs()[0]
        self.input = TensorInfo(self._input.name, tuple(self._input.shape))
        self.output = TensorInfo(self._output.name, tuple(self._output.shape))
        self.num_outputs = self._check() if _checked_outputs is None else _checked_outputs
        self.input_name = self.input.name
        self.output_names = [self.output.name]

    def _check(self) -> int:
        """Refuse a model whose input or output disagrees with its description; return class count."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(self.path, f"expected one input, the model has {len(inputs)}: "
                             f"{', '.join(i.name for i in inputs)}")
        dtype = _ORT_TYPES.get(self._input.type)
        if dtype is None:
            raise ModelError(self.path, f"input '{self.input.name}' is {self._input.type}; only float32 and "
                             f"uint8 image tensors are supported")
        base.check_input(self.path, self.spec, self.input.name, dtype, list(self.input.shape),
                         self._no_description_hint())
        out_shape = [d for d in self.output.shape]
        classes = 1
        for d in out_shape[1:]:
            if isinstance(d, int):
                classes *= d
            else:
                classes = -1
                break
        base.check_input_size(self.path, self.input_shape(), self.input_dtype())
        probed = self._probe_classes()
        if classes != -1 and probed != classes:
            raise ModelError(self.path, f"its output '{self.output.name}' declares {classes} values an image but "
                             f"gives {probed} for a blank image")
        classes = probed
        base.check_labels(self.path, self.spec, classes)
        return classes

    def _no_description_hint(self) -> str:
        """A model with neither metadata nor sidecar was checked against the defaults: say what to do."""
        if self.spec.origin != ms.default_spec_origin():
            return ""
        return ". The model carries no description" + base.no_description_hint(self.path, self.spec)

    def _probe_classes(self) -> int:
        """Run the model on a blank image (two, with a dynamic batch): what validation accepts must
        not fail on the first frame. Returns the output's values per image."""
        batch = 1 if isinstance(self.input.shape[0], int) else 2
        blank = base.blank_input(self.path, self.spec, batch)
        try:
            out = self.session.run([self.output.name], {self.input.name: blank})[0]
        except MemoryError:
            raise ModelError(self.path, "not enough memory to run it once on a blank image") from None
        except Exception as exc:
            raise ModelError(self.path, f"fails on a blank image: {ort_message(exc)[:200]}") from None
        classes = base.probe_rows(self.path, out, batch, self.output.name, self.input.name, self.input.shape[0])
        base.check_finite_scores(self.path, self.spec, out, batch)
        return classes

    def input_shape(self) -> tuple[int, ...]:
        return self.spec.input.tensor_shape(1)

    def input_dtype(self):
        return self.spec.input.np_dtype

    def sibling(self, threads: int) -> "Engine":
        """Another session on the same model and (already resolved) description, with its own threads (a lane)."""
        path, kwargs = self._init_args
        return Engine(path, threads, spec=self.spec, _checked_outputs=self.num_outputs, **kwargs)

    @property
    def batch_axis_dynamic(self) -> bool:
        """Whether the model takes more than one image per run (its batch axis is symbolic)."""
        return not isinstance(self.input.shape[0], int)

    @property
    def shareable(self) -> bool:
        """One-thread lanes share one session: onnxruntime's Run is thread-safe and, with one thread, runs
        in its caller's thread (core/plan.py lane_engines)."""
        return self.threads == 1

    def run(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self.output.name], {self.input.name: tensor})[0].reshape(-1)

    def run_batch(self, tensor: np.ndarray) -> np.ndarray:
        """Images stacked on the first axis -> one row of outputs per image."""
        return self.session.run([self.output.name], {self.input.name: tensor})[0].reshape(len(tensor), -1)

    def warm_up(self, runs: int = 3, batch: int = 1) -> None:
        """First runs allocate the arena and pick kernels; do them before the first real frame."""
        dummy = np.zeros((batch,) + self.input_shape()[1:], dtype=self.input_dtype())
        for _ in range(runs):
            self.run_batch(dummy)

    def info(self) -> dict[str, str]:
        """What sinks may show of the model (the /metrics model_info labels, the live page)."""
        return base.info_dict(self)

    def describe(self) -> str:
        info = self.spec.info_dict
        origin = [f"spec from {self.spec.origin}"] if self.spec.origin else []     # never "from None"
        parts = [self.path, *origin, "onnxruntime", f"{self.num_outputs} outputs",
                 f"{self.threads} thread(s)" + ("" if self.spinning or self.threads == 1 else " (no spin-wait)")]
        if info.get("arch"):
            parts.insert(1, info["arch"])
        if info.get("weights"):
            parts.append(f"weights: {info['weights']}")
        return ", ".join(parts)


def _check_io_counts(session, model_path: str) -> None:
    if not session.get_inputs():
        raise ModelError(model_path, "it has no input; expected one image tensor")
    if not session.get_outputs():
        raise ModelError(model_path, "it has no output; expected one tensor of class scores")
