"""The classify gate: run the model on a region (or the whole frame) only when its picture changed.

A camera on a wall sees the same picture for hours; classifying every frame of it is heat and CPU
for nothing. With the gate on (`classify: {motion: true}`), a region is classified when

- its picture changed since it was last classified: a small grey copy of the region (the long side
  at most SMALL pixels, each the mean of a block of the region's, which averages the sensor's
  per-pixel noise away)
  differs from the copy of the last classified frame by more than `threshold` grey levels in more
  than `min_area` of its pixels;
- it is still settling: after a change (and after the first frame, and after an interval's
  classification) the next `settle` frames are classified too, even if still. `settle` is the
  region's publish.min_frames, so the debouncing sees min_frames + 1 real classifications of the
  settled picture and confirms a state change at the same frame as the ungated daemon; an event is
  always confirmed by a classified frame (its snapshot is that frame);
- `interval` seconds have passed since its last change (or interval) was classified (0: never): slow
  changes (daylight) that stay under the threshold still reach the model.

Otherwise the region is skipped: no prediction record, its state stands. The reference is the last
*classified* copy, not the previous frame, so a slow drift adds up until it counts as a change.

Per-pixel difference against the last classified copy, not OpenCV's background subtractor (MOG2),
chosen by measurement (tests/gate_cost.py: a 640x480 region of a real photo with sensor noise of sigma
6 grey levels; on this 2-core x86 while other jobs ran on it, load about 3: noisy, medians of
thousands of calls): small copy + difference 0.10 ms a region (the copy 0.09 of it; 0.06 for a 320x480
half frame), no false change on 19 noisy frames, the change seen; MOG2 on the same small copy 0.12 ms
on top of the copy; MOG2 on the full region 3.4 ms (p95 7.4), with 2-7% of its pixels "foreground" on
pure noise. And MOG2 learns a still object into its background, so "changed since it was last
classified" is not what it answers.

Pure: no threads, no clock of its own (the caller passes the frame's monotonic time), tested without
the daemon (tests/test_gate.py). Decisions are taken in frame order (the pipeline's reader, under its
read lock), so two lanes gate exactly as one would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edge_runtime.util.schema import between, field

SMALL = 64      # longest side of the grey copy, pixels: 64x48 of a 640x480 region


@dataclass(frozen=True)
class ClassifyConfig:
    """`classify:` at the top level: the whole frame's gate, and every region's unless it has its own."""
    motion: bool = field(False, help="classify only when the picture changed (or at `interval`); "
                                     "off: every frame, as before")
    interval: float = field(0.0, check=between(0, 86400),
                            help="with the gate on, classify at least every this many seconds (0: only on change)")
    threshold: float = field(12.0, check=between(1, 255),
                             help="grey levels (0-255) a pixel of the small copy must change by to count")
    min_area: float = field(0.01, check=between(0, 1),
                            help="fraction of the region's pixels that must change for a change")

    @property
    def active(self) -> bool:
        """The gate skips frames at all: motion on, or an interval (a timer without change detection)."""
        return self.motion or self.interval > 0


@dataclass(frozen=True)
class RegionClassifyConfig:
    """A region's own `classify:`: each key set here wins over the top-level one; unset keys inherit it."""
    motion: bool | None = field(None)
    interval: float | None = field(None, check=between(0, 86400))
    threshold: float | None = field(None, check=between(1, 255))
    min_area: float | None = field(None, check=between(0, 1))


def resolve(top: ClassifyConfig, own: RegionClassifyConfig | None) -> ClassifyConfig:
    """The settings a region runs with: its own keys over the top-level ones."""
    if own is None:
        return top
    mine = {f.name: getattr(own, f.name) for f in dataclasses.fields(own) if getattr(own, f.name) is not None}
    return dataclasses.replace(top, **mine)


def small_grey(image: np.ndarray) -> np.ndarray:
    """The region as a small grey copy: grey first, then the mean of each k x k block, k the whole
    number that brings the long side to SMALL or less (a few edge pixels past the last whole block are
    left out). Measured (tests/gate_cost.py): an integer factor takes INTER_AREA's fast path, 6x
    faster than resizing the colour crop to exactly SMALL (0.05 vs 0.31 ms for 320x480)."""
    import cv2      # here: config imports this module, cv2 costs 23 ms

    if image.ndim == 3:
        channels = image.shape[2]
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY) \
            if channels in (3, 4) else image[..., 0]
    height, width = image.shape[:2]
    k = -(-max(height, width) // SMALL)
    if k > 1:
        image = cv2.resize(image[:height // k * k, :width // k * k], (width // k, height // k),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image, dtype=np.uint8)


class Gate:
    """One region's gate: `decide(crop, now)` says whether to classify this frame, and counts."""

    def __init__(self, settings: ClassifyConfig, settle: int):
        self.settings = settings
        self.settle = settle            # still frames classified after a change: the region's min_frames
        self.classified = 0
        self.gated = 0
        self._ref: np.ndarray | None = None     # small grey copy of the last classified frame
        self._last: float | None = None         # monotonic time of the last change or interval
        self._still = 0                          # still frames classified since the last change

    def reconfigure(self, settings: ClassifyConfig, settle: int) -> None:
        """A reload: new settings, the same reference, counts and settling (nothing is lost)."""
        self.settings, self.settle = settings, settle

    def changed(self, small: np.ndarray) -> bool:
        ref = self._ref
        if ref is None or ref.shape != small.shape:
            return True
        if not self.settings.motion:
            return False
        moved = np.count_nonzero(np.abs(small.astype(np.int16) - ref) > self.settings.threshold)
        return moved > self.settings.min_area * small.size

    def decide(self, crop: np.ndarray, now: float) -> bool:
        """True: classify this frame (`crop`: the region's pixels, `now`: the frame's monotonic time)."""
        if not self.settings.active:
            self.classified += 1
            return True
        try:
            small = small_grey(crop)
        except Exception:       # an image the Preprocessor will refuse with its own message: let it
            self.classified += 1
            return True
        if self.changed(small):
            self._still, self._last = 0, now
        elif self._still < self.settle:
            self._still += 1
        elif self.settings.interval > 0 and now - self._last >= self.settings.interval - 1e-9:
            # Like a change: settle again, so a new label can be confirmed now. Timed from the last
            # change or interval, not from its settling frames: one classification every `interval`.
            self._still, self._last = 0, now
        else:
            self.gated += 1
            return False
        self._ref = small
        self.classified += 1
        return True

    def counts(self) -> dict:
        return {"classified": self.classified, "gated": self.gated}


class Gates:
    """The gates of a Watch: one per region (by name), or one for the whole frame.

    `crop(image, box)`: the region's pixels (regions.crop, passed in: regions imports this module's
    config, and modules do not import each other in a circle)."""

    def __init__(self, gates: Mapping[str, Gate], boxes: Mapping[str, Sequence[float]] | None = None,
                 crop: Callable[[np.ndarray, Sequence[float]], np.ndarray] | None = None):
        self.gates = dict(gates)
        self.boxes = dict(boxes or {})      # none: the gate sees the whole frame
        self.crop = crop

    @property
    def active(self) -> bool:
        return any(g.settings.active for g in self.gates.values())

    def choose(self, image: np.ndarray, now: float) -> frozenset[str]:
        """The names to classify in this frame (called in frame order)."""
        picked = []
        for name, gate in self.gates.items():
            box = self.boxes.get(name)
            try:
                region = image if box is None or self.crop is None else self.crop(image, box)
            except (ValueError, AttributeError, IndexError):
                region = image      # a frame the Preprocessor will refuse: classify, so it says so
            if gate.decide(region, now):
                picked.append(name)
        return frozenset(picked)
