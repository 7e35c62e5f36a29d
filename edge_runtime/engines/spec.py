"""What a model expects: input size, crop, colour order, layout, dtype, normalisation, labels, output kind.

Read, in this order, from the ONNX file's own metadata (written by models/export.py and
models/quantize.py), a sidecar YAML next to the model (`model.onnx` -> `model.yaml`), the config
file's `model_spec` section, or torchvision's MobileNetV3 recipe as the default. A `.tflite` model
(engines/litert.py) the same way, its file's own input shape, type and labels in place of the recipe.

The sidecar format (also the shape of the metadata, with labels inline):

    input:
      size: [224, 224]          # H, W fed to the model
      resize: 256               # shorter side before a centre crop; omit to resize straight to size
      color: rgb                # rgb | bgr
      layout: nchw              # nchw | nhwc
      dtype: float32            # float32 | uint8 (uint8: raw 0-255 pixels, no normalisation)
      mean: [0.485, 0.456, 0.406]
      std: [0.229, 0.224, 0.225]
      interpolation: linear     # linear | area (OpenCV's INTER_LINEAR / INTER_AREA)
    labels: imagenet_labels.txt # path relative to the YAML, or an inline list
    label_offset: 0
    output: logits              # logits | probabilities
    output_scale: null          # multiplier for integer outputs (TFLite uint8 softmax: 1/256)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from edge_runtime.util import safeio, schema
from edge_runtime.util.errors import ConfigError
from edge_runtime.util.schema import Invalid, all_of, at_most, between, field, greater_than, length, one_of

# onnx metadata_props keys. The spec itself is one JSON document so it cannot drift apart.
METADATA_SPEC_KEY = "edge_runtime.spec"
METADATA_INFO_PREFIX = "edge_runtime."  # e.g. edge_runtime.arch, edge_runtime.weights, edge_runtime.exporter

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LABELS_FILE = Path(__file__).resolve().parents[1] / "data" / "imagenet_labels.txt"


# Normalisation is (x/255 - mean) / std. Real models use std from 1/255 (raw pixels) to 1 and mean from 0
# to 1; these bounds keep every input value finite in float32 (at most ~1e8) while admitting any sane
# recipe. A std of 1e-45 passed "> 0" and made every frame NaN (issue 28.3).
STD_RANGE = (1e-4, 1e4)
MEAN_RANGE = (-1e4, 1e4)


@dataclass(frozen=True)
class InputSpec:
    size: tuple[int, ...] = field((224, 224), check=length(2, between(1, 8192)), help="H, W")
    resize: int | None = field(None, check=between(1, 16384), help="shorter side before centre crop")
    color: str = field("rgb", check=one_of("rgb", "bgr"))
    layout: str = field("nchw", check=one_of("nchw", "nhwc"))
    dtype: str = field("float32", check=one_of("float32", "uint8"))
    mean: tuple[float, ...] = field(IMAGENET_MEAN, check=length(3, between(*MEAN_RANGE)))
    std: tuple[float, ...] = field(IMAGENET_STD, check=length(3, between(*STD_RANGE)))
    interpolation: str = field("linear", check=one_of("linear", "area"))

    def tensor_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The model's input tensor for `batch` images: the one place layout becomes a shape."""
        h, w = self.size
        return (batch, 3, h, w) if self.layout == "nchw" else (batch, h, w, 3)

    @property
    def np_dtype(self) -> type:
        return np.float32 if self.dtype == "float32" else np.uint8

    def __post_init__(self):
        if self.resize is not None and self.resize < min(self.size):
            raise Invalid("resize", f"resize {self.resize} is smaller than the crop size {list(self.size)}")


@dataclass(frozen=True)
class SpecDocument:
    """The sidecar / metadata document as written by the user."""
    input: InputSpec = field(default_factory=InputSpec)
    labels: str | tuple[str, ...] | None = field(None, help="file relative to the YAML, or a list")
    label_offset: int = field(0, check=between(0, 1_000_000))
    output: str = field("logits", check=one_of("logits", "probabilities"))
    output_scale: float | None = field(None, check=all_of(greater_than(0), at_most(1e6)))


@dataclass(frozen=True)
class ModelSpec:
    input: InputSpec
    labels: tuple[str, ...] | None
    label_offset: int
    output: str
    output_scale: float | None
    origin: str                      # where the description came from, for logs and errors
    info: tuple[tuple[str, str], ...] = ()   # arch, weights, exporter... from the metadata

    @property
    def info_dict(self) -> dict[str, str]:
        return dict(self.info)

    @property
    def untrained(self) -> bool:
        return self.info_dict.get("weights", "").startswith("untrained")

    def label(self, index: int) -> str:
        i = index - self.label_offset
        if self.labels is not None and 0 <= i < len(self.labels):
            return self.labels[i]
        return f"class_{index}"

    def to_document(self) -> dict[str, Any]:
        """The sidecar-format dict with labels inline: what goes into ONNX metadata."""
        doc = {"input": schema.to_dict(self.input), "labels": list(self.labels) if self.labels else None,
               "label_offset": self.label_offset, "output": self.output}
        if self.output_scale is not None:
            doc["output_scale"] = self.output_scale
        return doc

    def to_metadata(self, **info: str) -> dict[str, str]:
        """metadata_props entries for an ONNX file: the spec plus descriptive info (arch, weights...)."""
        props = {METADATA_SPEC_KEY: json.dumps(self.to_document())}
        for key, value in info.items():
            props[METADATA_INFO_PREFIX + key] = str(value)
        return props


def labels_from_text(text: str) -> tuple[str, ...]:
    """One label a line, trailing blank lines dropped. Lines that all start with their own index and a
    space (`0 Class 1`, as Teachable Machine writes labels.txt) lose the index: the name is the rest."""
    labels = tuple(line.strip() for line in text.splitlines())
    while labels and not labels[-1]:
        labels = labels[:-1]
    pairs = [(label, f"{i} ") for i, label in enumerate(labels)]
    if labels and all(label.startswith(p) and label[len(p):].strip() for label, p in pairs):
        labels = tuple(label[len(p):].strip() for label, p in pairs)
    return labels


def read_labels(path: Path, *, file: str | None = None) -> tuple[str, ...]:
    try:
        text = safeio.read_text(path, limit=safeio.MAX_TEXT_BYTES)    # regular file, bounded, UTF-8
    except OSError as exc:
        raise ConfigError(f"cannot read labels file {path}: {exc.strerror or exc}", file=file, key="labels") from None
    labels = labels_from_text(text)
    if not labels:
        raise ConfigError(f"labels file {path} is empty", file=file, key="labels")
    return labels


def from_document(doc: Any, *, origin: str, base_dir: Path | None, file: str | None,
                  info: dict[str, str] | None = None) -> ModelSpec:
    parsed: SpecDocument = schema.build(SpecDocument, doc, file=file)
    labels: tuple[str, ...] | None
    if isinstance(parsed.labels, str):
        label_path = Path(parsed.labels)
        if not label_path.is_absolute() and base_dir is not None:
            label_path = base_dir / label_path
        labels = read_labels(label_path, file=file)
    else:
        labels = parsed.labels
    return ModelSpec(input=parsed.input, labels=labels, label_offset=parsed.label_offset,
                     output=parsed.output, output_scale=parsed.output_scale, origin=origin,
                     info=tuple(sorted((info or {}).items())))


def default_spec_origin() -> str:
    return "defaults (torchvision MobileNetV3 recipe)"


def default_spec() -> ModelSpec:
    labels = read_labels(DEFAULT_LABELS_FILE) if DEFAULT_LABELS_FILE.exists() else None
    return ModelSpec(input=InputSpec(resize=256), labels=labels, label_offset=0, output="logits",
                     output_scale=None, origin=default_spec_origin())


def from_metadata(props: dict[str, str], model_path: str) -> ModelSpec | None:
    """The spec embedded in an ONNX file's metadata_props, or None when there is none."""
    if METADATA_SPEC_KEY not in props:
        return None
    try:
        doc = safeio.load_json(props[METADATA_SPEC_KEY])     # bounded size and depth
    except ValueError as exc:
        raise ConfigError(f"metadata '{METADATA_SPEC_KEY}' is not valid JSON: {exc}", file=model_path) from None
    info = {k[len(METADATA_INFO_PREFIX):]: v for k, v in props.items()
            if k.startswith(METADATA_INFO_PREFIX) and k != METADATA_SPEC_KEY}
    return from_document(doc, origin=f"{model_path} (metadata)", base_dir=None,
                         file=f"{model_path} (metadata)", info=info)


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(model_path).with_suffix(".yaml")


def load_sidecar(path: Path) -> ModelSpec:
    try:
        doc = safeio.load_yaml_file(path)       # regular file, bounded, UTF-8, no aliases, bounded depth
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML{safeio.yaml_problem(exc)}", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    return from_document(doc, origin=str(path), base_dir=path.parent, file=str(path))


def resolve(model_path: str, metadata: dict[str, str], config_doc: Any | None,
            config_file: str | None = None, default: Callable[[], ModelSpec] | None = None) -> ModelSpec:
    """Pick the model's description: metadata, then sidecar, then config, then `default()` (an engine's
    reading of the file itself: engines/litert.py) or torchvision's recipe. A label file named by
    `config_doc` was already resolved against the config's folder when it was loaded."""
    spec = from_metadata(metadata, model_path)
    if spec is not None:
        return spec
    side = sidecar_path(model_path)
    if side.exists():
        return load_sidecar(side)
    if config_doc is not None:
        return from_document(config_doc, origin=f"{config_file or 'config'} (model_spec)",
                             base_dir=None, file=config_file)
    return default() if default is not None else default_spec()

