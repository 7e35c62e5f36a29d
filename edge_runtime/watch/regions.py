"""Regions: named crops of the frame, each classified as if it were the whole frame.

A region's box is [x, y, w, h] in fractions of the frame, so one config fits any capture size.
The crop is taken in source pixels (`crop_pixels`), as a view (no copy), and then goes through
the model's own Preprocessor unchanged: whatever the description says (resize + centre crop or a
straight resize, colour order, layout) applies to the crop exactly as it would to a frame.
`fill_batch` puts N regions of one frame into the N slots of one tensor, so regions that share a
model with a dynamic batch axis cost one `session.run`.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge_runtime.util import schema
from edge_runtime.util.errors import ConfigError
from edge_runtime.util.schema import Invalid, field
from edge_runtime.watch.gate import RegionClassifyConfig

NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
# Boxes summed from decimal fractions (0.55 + 0.45) may exceed 1 by a rounding error; crop_pixels clamps.
_EPS = 1e-9


def _name(value: str) -> str | None:
    if NAME_PATTERN.fullmatch(value):
        return None
    return f"expected 1 to 32 of a-z 0-9 _ - (used in topics, file names and JSON), got {value!r}"


def _fraction(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"expected a number from 0 to 1, got {value!r}"


def _box(box: tuple[float, ...]) -> str | None:
    if len(box) != 4:
        return f"expected [x, y, width, height] (4 fractions of the frame), got {list(box)!r}"
    x, y, w, h = box
    if not all(0.0 <= v <= 1.0 for v in box):
        return f"expected fractions of the frame from 0 to 1, got {list(box)!r}"
    if w <= 0 or h <= 0:
        return f"expected a width and height above 0, got {list(box)!r}"
    if x + w > 1.0 + _EPS or y + h > 1.0 + _EPS:
        return f"the box reaches outside the frame (x + width and y + height must be <= 1), got {list(box)!r}"
    return None


def _frames(value: int) -> str | None:
    return None if 1 <= value <= 10000 else f"expected an integer from 1 to 10000, got {value!r}"


def _thresholds(value: dict) -> str | None:
    for label, threshold in value.items():
        if not label:
            return "expected label names, got an empty one"
        if not 0.0 <= threshold <= 1.0:
            return f"expected thresholds from 0 to 1, got {label!r}: {threshold!r}"
    return None


@dataclass(frozen=True)
class RegionConfig:
    name: str = field(check=_name, help="unique; used in MQTT topics, snapshot file names and JSON")
    box: tuple[float, ...] = field(check=_box, help="[x, y, width, height] as fractions of the frame")
    model: str | None = field(None, help="default: the top-level model")
    threshold: float | None = field(None, check=_fraction, help="default: publish.threshold")
    min_frames: int | None = field(None, check=_frames, help="default: publish.min_frames")
    thresholds: dict[str, float] | None = field(None, check=_thresholds, help="label -> threshold")
    classify: RegionClassifyConfig = field(default_factory=RegionClassifyConfig,
                                           help="this region's gate; unset keys: the top-level classify")


# Each region costs a crop, a slot of every lane's input tensor (0.6 MB at 224x224 float32), a state and its
# metrics; 1000 regions used 2.8 GB. 64 covers a car park's spaces on one camera and bounds that to ~200 MB.
MAX_REGIONS = 64


def check_count(regions: Sequence[RegionConfig]) -> None:
    """For Config.__post_init__: more than MAX_REGIONS regions is an error at `regions`."""
    if len(regions) > MAX_REGIONS:
        raise Invalid("regions", f"{len(regions)} regions, at most {MAX_REGIONS} allowed (each is classified on "
                      "every frame and holds its own input tensor); run a second service for more")


def unknown_threshold_labels(regions: Sequence[RegionConfig], default_model: str,
                             labels_of: Callable[[str], set[str]]) -> list[tuple[str, str]]:
    """(key, message) for every `regions[i].thresholds` label that the region's model does not have: such
    a threshold would never apply. `labels_of(model path)` gives the labels that model publishes."""
    problems = []
    for i, region in enumerate(regions):
        if not region.thresholds:
            continue
        model = region.model or default_model
        known = labels_of(model)
        for label in region.thresholds:
            if label not in known:
                close = sorted(k for k in known if k.lower() == label.lower())
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append((f"regions[{i}].thresholds.{label}",
                                 f"region {region.name!r}: the model {model} has no label {label!r}{hint}; "
                                 "this threshold would never apply"))
    return problems


def check_unique(regions: Sequence[RegionConfig]) -> None:
    """For Config.__post_init__: a duplicate name is an error at `regions[i].name`."""
    seen: set[str] = set()
    for i, region in enumerate(regions):
        if region.name in seen:
            raise Invalid(f"regions[{i}].name", f"duplicate region name {region.name!r}")
        seen.add(region.name)


def parse_region_flag(text: str) -> RegionConfig:
    """`--region NAME=X,Y,W,H` -> RegionConfig; ConfigError (file 'command line', key '--region') if wrong."""
    usage = "expected NAME=X,Y,W,H (x, y, width, height as fractions of the frame, e.g. door=0.5,0.1,0.4,0.8)"
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or len(parts) != 4:
        raise ConfigError(f"{usage}, got {text!r}", file="command line", key="--region")
    try:
        box = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{usage}, got {text!r}", file="command line", key="--region") from None
    try:
        return schema.build(RegionConfig, {"name": name.strip(), "box": box}, file="command line")
    except ConfigError as exc:
        raise ConfigError(f"{exc.detail} (in {text!r})", file="command line", key="--region") from None


def crop_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of `box` in a width x height frame, end-exclusive.

    Each edge is rounded to the nearest pixel boundary (halves up), so two boxes that touch in
    fractions touch in pixels too: no gap, no overlap. The result is clamped to the frame and is
    never empty: a box thinner than a pixel still gets one pixel row/column.
    """
    if width < 1 or height < 1:
        raise ValueError(f"empty frame {width}x{height}")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"non-finite box {list(box)!r}")

    def span(start: float, size: float, full: int) -> tuple[int, int]:
        lo = min(max(math.floor(start * full + 0.5), 0), full - 1)
        hi = min(max(math.floor((start + size) * full + 0.5), lo + 1), full)
        return lo, hi

    x0, x1 = span(x, w, width)
    y0, y1 = span(y, h, height)
    return x0, y0, x1, y1


def crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The region of `image` (HxW or HxWxC) as a view: no pixels copied."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = crop_pixels(box, width, height)
    return image[y0:y1, x0:x1]


def model_windows(pre, boxes: Sequence[Sequence[float]], height: int, width: int) -> list[tuple[int, int, int, int]]:
    """For each box, the window of a height x width frame that becomes the model input: the box in
    pixels (crop_pixels), then the model's own crop of that (Preprocessor.window), in frame pixels
    as (y0, y1, x0, x1). The same for every frame of one size, so a RegionGroup computes it once."""
    windows = []
    for box in boxes:
        x0, y0, x1, y1 = crop_pixels(box, width, height)
        a0, a1, b0, b1 = pre.window(y1 - y0, x1 - x0)
        windows.append((y0 + a0, y0 + a1, x0 + b0, x0 + b1))
    return windows


def fill_batch(pre, image: np.ndarray, boxes: Sequence[Sequence[float]], tensor: np.ndarray,
               windows: Sequence[tuple[int, int, int, int]] | None = None) -> np.ndarray:
    """Preprocess each box of `image` into its own slot of `tensor` (slot i = boxes[i]), exactly as
    `pre(crop(image, box))` would (tests/test_regions.py checks it slot by slot).

    `pre` is the model's Preprocessor; `tensor` holds at least len(boxes) slots (pre.new_buffer(N));
    `windows`: model_windows() for this image's size, if the caller keeps them.
    Returns tensor[:len(boxes)], ready for one Engine.run_batch.
    """
    # here, not at the top: config imports this module, cv2 costs 23 ms
    from edge_runtime.engines.preprocess import as_bgr

    n = len(boxes)
    if n > len(tensor):
        raise ValueError(f"{n} regions but the tensor has {len(tensor)} slots")
    image = as_bgr(image)
    if windows is None:
        windows = model_windows(pre, boxes, image.shape[0], image.shape[1])
    for slot, window in enumerate(windows):
        pre.fill_window(image, window, tensor[slot:slot + 1])
    return tensor[:n]


def group_by_model(regions: Sequence[RegionConfig], default_model: str) -> dict[str, list[RegionConfig]]:
    """Regions by the model they use (their own, else `default_model`), in config order: each group
    is one session and, with a dynamic batch axis, one run per frame."""
    groups: dict[str, list[RegionConfig]] = {}
    for region in regions:
        groups.setdefault(region.model or default_model, []).append(region)
    return groups


class RegionGroup:
    """The regions that share one Engine: their boxes, one tensor, the model's pre- and postprocessing.

    Not thread-safe (the Preprocessor and the tensor are reused): one group per lane/thread.
    """

    def __init__(self, engine, regions: Sequence[RegionConfig], top_k: int = 5):
        from edge_runtime.engines.postprocess import Postprocessor
        from edge_runtime.engines.preprocess import Preprocessor, as_bgr

        if not regions:
            raise ValueError("a region group needs at least one region")
        self.engine = engine
        self.regions = tuple(regions)
        self.names = [r.name for r in self.regions]
        self.boxes = [r.box for r in self.regions]
        self.pre = Preprocessor(engine.spec.input)
        self.post = Postprocessor(engine.spec, top_k)
        self._as_bgr = as_bgr
        self.tensor = self.pre.new_buffer(len(self.regions) if engine.batch_axis_dynamic else 1)
        self.last_ms = (0.0, 0.0)        # (preprocessing, inference) of the last classify(), for stats
        self._windows: tuple[tuple[int, int], list] = ((0, 0), [])    # (frame size, model_windows) last used

    def windows(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """model_windows() for this image's size, worked out again only when the frame size changes."""
        size = image.shape[:2]
        if self._windows[0] != size:
            self._windows = (size, model_windows(self.pre, self.boxes, size[0], size[1]))
        return self._windows[1]

    def classify(self, image: np.ndarray, released=contextlib.nullcontext,
                 only: Sequence[int] | None = None) -> list[list[dict] | None]:
        """Top-k per region, in the group's order; None for a region whose scores hold NaN/inf (refused
        alone: the other regions stand). FrameError for an image the Preprocessor refuses.
        `released`: entered around each session.run (the pipeline's lanes take turns for the rest).
        `only`: the indices of the regions to classify (the classify gate's pick), batched alone; the
        result is theirs, in that order."""
        start = time.perf_counter()
        image = self._as_bgr(image)         # FrameError for what the Preprocessor refuses, before the windows
        windows = self.windows(image)
        boxes = self.boxes
        if only is not None:
            boxes, windows = [boxes[i] for i in only], [windows[i] for i in only]
        if self.engine.batch_axis_dynamic:
            batch = fill_batch(self.pre, image, boxes, self.tensor, windows)
            mid = time.perf_counter()
            with released():
                outputs = self.engine.run_batch(batch)
            pre_s, inf_s = mid - start, time.perf_counter() - mid
        else:
            rows, pre_s, inf_s = [], 0.0, 0.0
            slot = self.tensor[:1]
            for i in range(len(boxes)):
                t0 = time.perf_counter()
                self.pre.fill_window(image, windows[i], slot)
                t1 = time.perf_counter()
                with released():
                    rows.append(self.engine.run_batch(slot)[0])
                pre_s, inf_s = pre_s + t1 - t0, inf_s + time.perf_counter() - t1
            outputs = rows
        self.last_ms = (pre_s * 1000.0, inf_s * 1000.0)
        # One vectorised top-k for the group's rows: a Python loop of N was ~0.15 ms of N = 8's frame.
        return self.post.top_block(np.asarray(outputs))
