"""Watching regions: per-region records, states, events and snapshots, wired into the pipeline.

The lanes classify each frame's regions (RegionGroup: one session.run per model and frame when its
batch axis is dynamic) and hand the publisher a top-k per region. The publisher, which already
serialises frames in order, gives each frame's tops to `Watch.frame_done()`: the states must be fed
in frame order, or "3 consecutive frames" would mean nothing with two lanes. On a change the event
gets its snapshot (queued to the SnapshotWriter's own thread, never written here) and goes to every
sink's `event()`. With no `regions:` the whole frame is the region `frame`, fed from its own top-1.
"""

from __future__ import annotations

import logging
import threading
from typing import Mapping, Sequence

from edge_runtime.watch.events import FRAME_REGION, RegionState
from edge_runtime.engines.lanes import lane_engines
from edge_runtime.watch.gate import ClassifyConfig, Gate, Gates, resolve
from edge_runtime.watch.regions import RegionConfig, RegionGroup, crop, group_by_model
from edge_runtime.watch.snapshots import SnapshotWriter
from edge_runtime.sources import Frame

log = logging.getLogger(__name__)


class Watch:
    """States of the watched regions (or of the whole frame), the events and the snapshot writer."""

    def __init__(self, regions: Sequence[RegionConfig], publish, sinks: Sequence, writer: SnapshotWriter | None,
                 stats=None, classify: ClassifyConfig | None = None):
        self.regions = tuple(regions)
        self.boxes = {r.name: tuple(r.box) for r in self.regions}
        self.states = {r.name: RegionState.from_config(r, publish) for r in self.regions} \
            or {FRAME_REGION: RegionState.whole_frame(publish)}
        # The classify gate of each region (or of the whole frame), asked by the pipeline's reader in
        # frame order (gate.py). Here, not in the lanes: a reload swaps the lanes, the gates stay.
        self.classify = classify or ClassifyConfig()
        self.gates = Gates({name: Gate(self._gate_settings(name), state.min_frames)
                            for name, state in self.states.items()}, self.boxes, crop)
        self.sinks = list(sinks)
        self.writer = writer
        self.stats = stats
        self.events = 0
        # Frames in which a region's scores held NaN/inf (left out of that frame): counted by the lanes,
        # which refuse them before the publisher, so under a lock of its own.
        self._refused = dict.fromkeys(self.states, 0)
        self._refused_lock = threading.Lock()

    def _gate_settings(self, name: str) -> ClassifyConfig:
        region = next((r for r in self.regions if r.name == name), None)
        return resolve(self.classify, region.classify if region is not None else None)

    def reconfigure(self, regions: Sequence[RegionConfig], publish, classify: ClassifyConfig | None = None) -> None:
        """A reload: the same regions (by name) with new boxes or thresholds. Each state keeps its current
        label and counts; only its rule changes (called between two frames, under no lock: a box is
        one tuple swap, a threshold one float). Each gate keeps its reference picture and counts."""
        for region in regions:
            state = self.states.get(region.name)
            if state is None:
                continue
            rule = RegionState.from_config(region, publish)
            state.threshold, state.min_frames, state.thresholds = rule.threshold, rule.min_frames, rule.thresholds
        if regions:
            self.boxes = {r.name: tuple(r.box) for r in regions}
            self.regions = tuple(regions)
        if classify is not None:
            self.classify = classify
        for name, gate in self.gates.gates.items():
            gate.reconfigure(self._gate_settings(name), self.states[name].min_frames)
        self.gates.boxes = dict(self.boxes)

    def start(self) -> None:
        if self.writer is not None:
            self.writer.start()
        if self.stats is not None and self.regions:
            # Per-region counts in the stats line, only when regions are configured; asked for when a
            # line is made, not copied on every frame.
            self.stats.set_extra("regions", self.summaries)
        elif self.stats is not None and self.gates.active:
            # The whole frame's gate, when on: how many frames it classified and skipped.
            self.stats.set_extra("gate", self.gates.gates[FRAME_REGION].counts)

    def summaries(self) -> dict:
        with self._refused_lock:
            refused = dict(self._refused)
        return {name: {**state.summary(), "refused": refused.get(name, 0), **self._counts(name, state)}
                for name, state in self.states.items()}

    def _counts(self, name: str, state: RegionState) -> dict:
        """Classified and gated (skipped) frames; without the gate, every classified frame is a state's."""
        gate = self.gates.gates[name]
        if gate.classified or gate.gated:
            return gate.counts()
        return {"classified": state.frames, "gated": 0}

    def refused(self, names: Sequence[str]) -> None:
        """Regions of one frame whose scores held NaN/inf (called by a lane)."""
        with self._refused_lock:
            for name in names:
                self._refused[name] = self._refused.get(name, 0) + 1

    def close(self) -> None:
        """Write the snapshots still queued, stop the writer thread. Bounded: SIGTERM must still end the
        daemon within 2 s, however slow the disk."""
        if self.writer is not None:
            self.writer.close(timeout=1.0)

    def frame_done(self, frame: Frame, tops: Mapping[str, list]) -> None:
        """One published frame's top-k per region name, in frame order (the publisher's lock is held)."""
        for name, top in tops.items():
            state = self.states.get(name)
            if state is None:
                continue
            best = top[0] if top else None
            event = state.update(best and best["label"], best and best["score"], frame.index, round(frame.ts, 6))
            if event is not None:
                self._emit(event, frame)

    def _emit(self, event: dict, frame: Frame) -> None:
        if self.writer is not None and frame.image is not None:
            event["snapshot"] = self.writer.submit(frame.image, event["region"], self.boxes.get(event["region"]),
                                                   event["to"], event["ts"])
        self.events += 1
        for sink in self.sinks:
            sink.event(event)


def lane_groups(regions: Sequence[RegionConfig], default_model: str, engines: Mapping[str, object], lanes: int,
                top_k: int) -> list[list[RegionGroup]]:
    """For each lane, one RegionGroup per model (a group's tensor and preprocessor are the lane's own;
    one-thread lanes share each model's session, as they share the frame model's)."""
    groups = group_by_model(regions, default_model)
    per_model = {model: lane_engines(engines[model], lanes) for model in groups}
    return [[RegionGroup(per_model[model][i], members, top_k) for model, members in groups.items()]
            for i in range(lanes)]
