"""Per-region state and events (edge_runtime/watch/events.py): the debounce rule, table-tested."""

from __future__ import annotations

import pytest

from edge_runtime.config import PublishConfig
from edge_runtime.watch.events import RegionState
from edge_runtime.watch.regions import RegionConfig
from edge_runtime.sinks.mqtt import StateTracker

NAN, INF = float("nan"), float("inf")

# (threshold, min_frames, per-label thresholds, frames [(label, score)], frame indexes that change the state)
CASES = {
    "steady scene: one change after min_frames": (0.5, 3, None, [("a", 0.9)] * 6, {2: "a"}),
    "min_frames 1: at once": (0.5, 1, None, [("a", 0.9), ("b", 0.9), ("b", 0.9)], {0: "a", 1: "b"}),
    "at the threshold counts": (0.5, 2, None, [("a", 0.5), ("a", 0.5)], {1: "a"}),
    "below the threshold breaks the run": (0.5, 3, None, [("a", 0.9), ("a", 0.9), ("a", 0.49), ("a", 0.9),
                                                          ("a", 0.9), ("a", 0.9)], {5: "a"}),
    "another label breaks the run": (0.5, 2, None, [("a", 0.9), ("b", 0.9), ("a", 0.9), ("a", 0.9)], {3: "a"}),
    "no label breaks the run": (0.5, 2, None, [("a", 0.9), (None, 0.9), ("a", 0.9), ("a", 0.9)], {3: "a"}),
    "NaN never counts": (0.0, 2, None, [("a", 0.9), ("a", NAN), ("a", 0.9), ("a", 0.9)], {3: "a"}),
    "inf never counts": (0.0, 1, None, [("a", INF), ("a", -INF), ("a", None)], {}),
    "the same state again is no event": (0.5, 2, None, [("a", 0.9)] * 2 + [("b", 0.9)] + [("a", 0.9)] * 3, {1: "a"}),
    "uncertain keeps the last state": (0.5, 2, None, [("a", 0.9)] * 2 + [("b", 0.2)] * 5, {1: "a"}),
    "back and forth": (0.5, 2, None, [("a", 0.9)] * 2 + [("b", 0.9)] * 2 + [("a", 0.9)] * 2,
                       {1: "a", 3: "b", 5: "a"}),
    "per-label threshold above the region's": (0.5, 1, {"open": 0.8},
                                               [("open", 0.7), ("closed", 0.6), ("open", 0.85)],
                                               {1: "closed", 2: "open"}),
    "per-label threshold below the region's": (0.9, 1, {"open": 0.3}, [("closed", 0.6), ("open", 0.35)],
                                               {1: "open"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_rule(case):
    threshold, min_frames, per_label, frames, changes = CASES[case]
    state = RegionState("door", threshold, min_frames, per_label)
    got = {}
    for i, (label, score) in enumerate(frames):
        event = state.update(label, score, frame=i, ts=100.0 + i)
        if event is not None:
            got[i] = event["to"]
    assert got == changes
    assert state.frames == len(frames)
    assert state.changes == len(changes)


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][2] is None))
def test_step_is_the_mqtt_state_rule(case):
    """Same answers as MqttSink's StateTracker frame by frame, so that tracker can delegate to this one."""
    threshold, min_frames, _, frames, _ = CASES[case]
    ours, theirs = RegionState("frame", threshold, min_frames), StateTracker(threshold, min_frames)
    for label, score in frames:
        if score is None or score != score or score in (INF, -INF):
            continue        # the old tracker compares NaN/inf as numbers; ours never counts them
        assert ours.step(label, score) == theirs.update(label, score)
        assert ours.current == theirs.current


def test_event_dict_exactly():
    state = RegionState("door", 0.5, 2)
    assert state.update("closed", 0.8, frame=10, ts=1000.0) is None
    first = state.update("closed", 0.81234567, frame=11, ts=1000.5)
    assert first == {"type": "event", "region": "door", "from": None, "to": "closed", "score": 0.81235,
                     "frame": 11, "ts": 1000.5, "previous_for_s": None, "snapshot": None}
    assert list(first) == ["type", "region", "from", "to", "score", "frame", "ts", "previous_for_s", "snapshot"]
    state.update("open", 0.95, frame=500, ts=1412.0)
    second = state.update("open", 0.91, frame=501, ts=1413.0)
    assert second == {"type": "event", "region": "door", "from": "closed", "to": "open", "score": 0.91,
                      "frame": 501, "ts": 1413.0, "previous_for_s": 412.5, "snapshot": None}
    assert state.summary() == {"frames": 4, "state": "open", "score": 0.91, "changes": 2}


def test_overrides_from_config():
    publish = PublishConfig(threshold=0.4, min_frames=5)
    plain = RegionState.from_config(RegionConfig(name="a", box=(0, 0, 1, 1)), publish)
    assert (plain.threshold, plain.min_frames, plain.thresholds) == (0.4, 5, {})
    own = RegionState.from_config(RegionConfig(name="b", box=(0, 0, 1, 1), threshold=0.0, min_frames=1,
                                               thresholds={"open": 0.8}), publish)
    assert (own.threshold, own.min_frames, own.threshold_for("open"), own.threshold_for("shut")) == (0.0, 1, 0.8, 0.0)
    whole = RegionState.whole_frame(publish)
    assert (whole.name, whole.threshold, whole.min_frames) == ("frame", 0.4, 5)
