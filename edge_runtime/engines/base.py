"""What every engine provides, and the checks they all share.

An engine is one loaded model file that classifies images: the daemon (lanes, batching, regions,
reload, stats) and `bench` use nothing but the members listed in `Engine` below, so an engine for
another runtime or an accelerator is one module in this package plus one entry in REGISTRY
(engines/__init__.py). docs/ENGINES.md says what each member must do and how an engine is tested.

The checks here run before and after the runtime opens the file, with the same messages whatever the
runtime: the file itself (regular, UTF-8 name, not empty), its input against its description (rank,
layout, size, dtype), the size of one input tensor, and the class count against the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime.engines import spec as ms
from edge_runtime.util import safeio
from edge_runtime.util.errors import ModelError

MAX_INPUT_BYTES = 256 << 20    # one input tensor; real classifiers take < 5 MB (600x600x3 float32 is 4.3 MB)


@dataclass(frozen=True)
class TensorInfo:
    """An input or output as the runtime declares it: its name and shape (an int per fixed axis, a
    str or None for a symbolic one). What `batch_size` and the messages name."""
    name: str
    shape: tuple


class Engine(Protocol):
    """The members the rest of the daemon uses (onnxruntime's Engine and LiteRT's implement them)."""

    kind: str                   # the REGISTRY key: "onnxruntime", "litert"; in the stats line and /metrics
    path: str
    threads: int
    spec: ms.ModelSpec          # the resolved description (preprocessing, labels, output kind)
    input: TensorInfo
    output: TensorInfo
    num_outputs: int            # class scores per image, checked against the labels

    @property
    def batch_axis_dynamic(self) -> bool: ...
    @property
    def shareable(self) -> bool: ...            # may several lanes call run_batch on this one at once?

    def run(self, tensor: np.ndarray) -> np.ndarray: ...          # (1, ...) -> flat scores
    def run_batch(self, tensor: np.ndarray) -> np.ndarray: ...    # (N, ...) -> (N, classes)
    def warm_up(self, runs: int = 3, batch: int = 1) -> None: ...
    def sibling(self, threads: int) -> "Engine": ...              # the same model, checked, for another lane
    def input_shape(self) -> tuple[int, ...]: ...
    def input_dtype(self): ...
    def info(self) -> dict[str, str]: ...
    def describe(self) -> str: ...


def check_model_file(model_path: str, kind: str = "model") -> None:
    """Refuse, before a runtime opens it by name: a missing file, a folder, a FIFO/device (blocks or
    never ends), a name that is not UTF-8 (the runtimes' path arguments cannot carry it), an empty file."""
    path = Path(model_path)
    if not safeio.utf8_name(model_path):
        raise ModelError(safeio.display_path(model_path), "the file name is not valid UTF-8; rename the file")
    if not path.exists():
        raise ModelError(model_path, "file not found")
    if path.is_dir():
        raise ModelError(model_path, f"is a folder, not a {kind} file")
    try:
        st = safeio.check_regular(model_path)
    except OSError as exc:
        raise ModelError(model_path, exc.strerror or str(exc)) from None
    if st.st_size == 0:
        raise ModelError(model_path, "file is empty (0 bytes)")


def check_input(model_path: str, spec: ms.ModelSpec, name: str, dtype: str, shape: list, hint: str = "") -> None:
    """The model's input (its element type as float32/uint8, its shape) against the description."""
    want_spec = spec.input
    if dtype != want_spec.dtype:
        raise ModelError(model_path, f"input '{name}' is {dtype} but the description ({spec.origin}) says "
                         f"dtype {want_spec.dtype}{hint}")
    if len(shape) != 4:
        raise ModelError(model_path, f"input '{name}' has rank {len(shape)} {shape}; an image classifier "
                         f"takes a rank-4 tensor (N,C,H,W or N,H,W,C)")
    h, w = want_spec.size
    want = [None, 3, h, w] if want_spec.layout == "nchw" else [None, h, w, 3]
    for axis, (have, need) in enumerate(zip(shape, want, strict=True)):
        if need is not None and isinstance(have, int) and have > 0 and have != need:
            raise ModelError(model_path, f"input '{name}' has shape {shape} but the description ({spec.origin}) "
                             f"says {want_spec.layout.upper()} with size {list(want_spec.size)} (axis {axis}: "
                             f"model {have}, description {need}){hint}")


def check_input_size(model_path: str, shape: tuple[int, ...], dtype) -> None:
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size > MAX_INPUT_BYTES:
        raise ModelError(model_path, f"its input {list(shape)} takes {size >> 20} MB a frame, more than the "
                         f"{MAX_INPUT_BYTES >> 20} MB allowed; is the input size in its description right?")


def check_labels(model_path: str, spec: ms.ModelSpec, classes: int) -> None:
    labels = spec.labels
    if labels is not None and classes != len(labels) + spec.label_offset:
        raise ModelError(model_path, f"the model has {classes} outputs but the labels ({spec.origin}) "
                         f"give {len(labels)} classes with label_offset {spec.label_offset}, "
                         f"which needs {len(labels) + spec.label_offset}")


def probe_rows(model_path: str, out: np.ndarray, batch: int, output_name: str, input_name: str,
               batch_axis) -> int:
    """Class scores per image from the output of a blank-image run of `batch` images: what validation
    accepts must not fail on the first frame."""
    if batch > 1 and (out.ndim == 0 or out.shape[0] != batch):
        # Declared shapes can be wrong either way; what the graph does on two images is what counts.
        raise ModelError(model_path, f"its input '{input_name}' has a dynamic batch axis ({batch_axis}) but "
                         f"for {batch} images its output '{output_name}' has shape {list(out.shape)}: export "
                         "both with a dynamic batch, or both fixed at 1")
    if out.size == 0 or out.size % batch:
        raise ModelError(model_path, f"for {batch} image(s) its output '{output_name}' has shape "
                         f"{list(out.shape)}; expected one row of class scores per image")
    return int(out.size // batch)


def check_finite_scores(model_path: str, spec: ms.ModelSpec, out: np.ndarray, batch: int) -> None:
    """The blank-image run's scores, scaled as every frame's will be, must be finite: a model (or an
    output_scale) that gives NaN or infinity would have every frame refused, so say it once at start."""
    from edge_runtime.engines.postprocess import Postprocessor     # here: postprocess is not needed to load
    with np.errstate(all="ignore"):
        scores = Postprocessor(spec).scores_block(np.asarray(out, np.float32).reshape(batch, -1))
    if not np.isfinite(scores).all():
        raise ModelError(model_path, "gives NaN or infinity for a blank image (its output, scaled by the "
                         f"description's output_scale, {spec.origin}); every frame would be refused")


def blank_input(model_path: str, spec: ms.ModelSpec, batch: int) -> np.ndarray:
    """A black frame preprocessed as every frame will be: the description's mean/std must give a
    finite tensor (checked here, before the model sees it)."""
    from edge_runtime.engines.preprocess import Preprocessor       # here: cv2 only when a model is loaded
    h, w = spec.input.size
    with np.errstate(all="ignore"):
        one = Preprocessor(spec.input)(np.zeros((h, w, 3), np.uint8))
    if not np.isfinite(one).all():
        raise ModelError(model_path, f"its description's mean/std ({spec.origin}) make a blank image's "
                         "input NaN or infinity")
    return np.repeat(one, batch, axis=0)


def no_description_hint(model_path: str, spec: ms.ModelSpec) -> str:
    """A model with neither metadata nor sidecar was checked against the defaults: say what to do."""
    if spec.origin != ms.default_spec_origin() and not spec.origin.endswith("(the file itself)"):
        return ""
    return (f". Write {ms.sidecar_path(model_path)} next to it (input size, colour, layout, dtype, mean/std, "
            "labels; README section 'Models and what they expect')")


def info_dict(engine) -> dict[str, str]:
    """What sinks may show of the model (the /metrics model_info labels, the live page): the same keys
    for every engine."""
    info = engine.spec.info_dict
    size = engine.spec.input.size
    return {"path": str(engine.path), "engine": engine.kind, "arch": info.get("arch", ""),
            "weights": info.get("weights", ""), "input": f"{size[0]}x{size[1]}",
            "labels": str(len(engine.spec.labels or ())), "untrained": "true" if engine.spec.untrained else "false"}
