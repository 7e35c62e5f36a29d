"""State per region, debounced, and the event when it changes.

The rule (the one the MQTT state topic has always used, now per region and per label): a label
becomes the state once it is the top-1 with a score at or above its threshold for `min_frames`
consecutive frames. A label's threshold is its own (`thresholds`), else the region's, else
publish.threshold. A frame that does not qualify (no label, a score below the threshold, a
non-finite score) breaks the run. The state never goes back to "none": an uncertain scene keeps
the last state.
"""

from __future__ import annotations

import math
from typing import Mapping

FRAME_REGION = "frame"     # the whole frame's region name when no `regions:` are configured


class RegionState:
    """One region's state. `step()` is the bare rule (what MqttSink's StateTracker.update does);
    `update()` also counts frames and returns the event dict on a change."""

    def __init__(self, name: str, threshold: float, min_frames: int,
                 thresholds: Mapping[str, float] | None = None):
        if min_frames < 1:
            raise ValueError("min_frames must be >= 1")
        self.name = name
        self.threshold = threshold
        self.min_frames = min_frames
        self.thresholds = dict(thresholds or {})
        self.current: str | None = None
        self.score: float | None = None         # the score that made the current state
        self.since: float | None = None         # ts of the change to the current state
        self.frames = 0                         # frames classified for this region
        self.changes = 0
        self._candidate: str | None = None
        self._count = 0

    @classmethod
    def from_config(cls, region, publish) -> RegionState:
        """A RegionConfig's overrides on top of the PublishConfig's threshold and min_frames."""
        return cls(region.name,
                   publish.threshold if region.threshold is None else region.threshold,
                   publish.min_frames if region.min_frames is None else region.min_frames,
                   region.thresholds)

    @classmethod
    def whole_frame(cls, publish) -> RegionState:
        return cls(FRAME_REGION, publish.threshold, publish.min_frames)

    def threshold_for(self, label: str) -> float:
        return self.thresholds.get(label, self.threshold)

    def step(self, label: str | None, score: float | None) -> bool:
        """Feed one frame's top-1; True when `label` has just become the state."""
        if label is None or score is None or not math.isfinite(score) or score < self.threshold_for(label):
            self._candidate, self._count = None, 0
            return False
        if label == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = label, 1
        if self._count >= self.min_frames and label != self.current:
            self.current = label
            return True
        return False

    def update(self, label: str | None, score: float | None, frame: int, ts: float) -> dict | None:
        """One frame of this region: the event dict when the state changes, else None.

        `snapshot` is None here; the caller fills in the file name SnapshotWriter.submit() returns.
        """
        self.frames += 1
        previous, previous_since = self.current, self.since
        if not self.step(label, score):
            return None
        self.score = round(float(score), 5)
        self.since = ts
        self.changes += 1
        return {"type": "event", "region": self.name, "from": previous, "to": label, "score": self.score,
                "frame": frame, "ts": ts,
                "previous_for_s": None if previous_since is None else round(max(ts - previous_since, 0.0), 3),
                "snapshot": None}

    def summary(self) -> dict:
        """For the stats line: frames classified and the current state."""
        return {"frames": self.frames, "state": self.current, "score": self.score, "changes": self.changes}
