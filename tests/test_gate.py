"""The classify gate as a pure class (edge_runtime/watch/gate.py), on real photos with sensor noise; its
config keys; its counts in the stats line and /metrics. The gate in the real daemon: test_gate_daemon.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime import config as config_mod
from edge_runtime.core.metrics import Metrics
from edge_runtime.core.stats import Stats
from edge_runtime.util import schema
from edge_runtime.util.errors import ConfigError
from edge_runtime.watch.gate import ClassifyConfig, Gate, Gates, RegionClassifyConfig, resolve, small_grey
from edge_runtime.watch.regions import RegionConfig, crop
from edge_runtime.watch.watcher import Watch

ON = ClassifyConfig(motion=True)


@pytest.fixture(scope="module")
def photos(fixtures):
    def load(name, size=(640, 480)):
        return cv2.resize(cv2.imread(str(fixtures / "photos" / name)), size)
    return {name: load(name) for name in ("bird.png", "owl.jpg", "hot_dog.jpg")}


def noisy(image, rng, sigma=6.0):
    """A camera's per-frame sensor noise, then JPEG as a camera's MJPEG stream would carry it."""
    frame = np.clip(image.astype(np.float32) + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)


def run(gate, frames, start=0.0, step=0.05):
    """The indices of the frames the gate classifies (frames at 20 fps unless `step` says)."""
    return [i for i, f in enumerate(frames) if gate.decide(f, start + i * step)]


def test_noise_is_never_a_change_and_a_change_is_settled_for_min_frames(photos):
    rng = np.random.default_rng(0)
    bird, owl = photos["bird.png"], photos["owl.jpg"]
    frames = [noisy(bird, rng) for _ in range(40)] + [noisy(owl, rng) for _ in range(40)]
    gate = Gate(ON, settle=3)
    # The first frame and its 3 settling frames, then nothing until the owl, then it and 3 more.
    assert run(gate, frames) == [0, 1, 2, 3, 40, 41, 42, 43]
    assert gate.counts() == {"classified": 8, "gated": 72}


def test_motion_keeps_it_classified_until_the_picture_is_still(photos):
    """A thing moving across the region: every moving frame is a change; settling starts when it stops."""
    rng = np.random.default_rng(1)
    bird, owl = photos["bird.png"], cv2.resize(photos["owl.jpg"], (160, 120))
    frames = []
    for i in range(30):
        frame = bird.copy()
        x = 20 * min(i, 20)             # moves 20 px a frame for 20 frames, then stays
        frame[200:320, x:x + 160] = owl
        frames.append(noisy(frame, rng))
    gate = Gate(ON, settle=2)
    assert run(gate, frames) == list(range(0, 23))


def test_small_flicker_is_ignored_a_light_switched_on_is_not(photos):
    rng = np.random.default_rng(2)
    bird = photos["bird.png"].astype(np.int16)
    gate = Gate(ON, settle=0)
    flicker = [noisy(np.clip(bird + (4 if i % 2 else -4), 0, 255).astype(np.uint8), rng) for i in range(20)]
    assert run(gate, flicker) == [0]
    assert gate.decide(noisy(np.clip(bird + 60, 0, 255).astype(np.uint8), rng), 5.0)


def test_slow_drift_adds_up_against_the_last_classified_picture(photos):
    """The reference is the last classified copy: 1 grey level a frame is never a change frame to frame,
    but 12 levels later it is."""
    bird = photos["bird.png"].astype(np.int16)
    frames = [np.clip(bird + i, 0, 255).astype(np.uint8) for i in range(40)]
    picked = run(Gate(ClassifyConfig(motion=True, threshold=12, min_area=0.3), settle=0), frames)
    assert picked[0] == 0 and len(picked) >= 2
    assert all(10 <= b - a <= 16 for a, b in zip(picked, picked[1:], strict=False)), picked


def test_interval_reclassifies_a_still_picture_and_settles_again(photos):
    rng = np.random.default_rng(3)
    frames = [noisy(photos["bird.png"], rng) for _ in range(100)]
    gate = Gate(ClassifyConfig(motion=True, interval=1.0), settle=1)
    # 20 fps: 1 s is 20 frames; each interval's classification is settled like a change (1 more frame).
    assert run(gate, frames) == [0, 1, 20, 21, 40, 41, 60, 61, 80, 81]
    # The time is the frame's own: a late frame (the source paused) is classified as soon as it comes.
    assert gate.decide(frames[0], 4.0 + 0.5) is False and gate.decide(frames[0], 4.0 + 1.0) is True


def test_interval_alone_is_a_timer_and_off_classifies_every_frame(photos):
    rng = np.random.default_rng(4)
    changing = [noisy(photos["bird.png" if i % 2 else "owl.jpg"], rng) for i in range(45)]
    assert run(Gate(ClassifyConfig(interval=1.0), settle=0), changing) == [0, 20, 40]
    off = Gate(ClassifyConfig(), settle=3)
    assert run(off, changing) == list(range(45)) and off.gated == 0


def test_reconfigure_keeps_the_picture_and_the_counts(photos):
    rng = np.random.default_rng(5)
    gate = Gate(ON, settle=0)
    assert run(gate, [noisy(photos["bird.png"], rng) for _ in range(5)]) == [0]
    gate.reconfigure(ClassifyConfig(motion=True, threshold=30), settle=0)
    assert gate.decide(noisy(photos["bird.png"], rng), 1.0) is False        # no new first frame
    assert gate.decide(photos["owl.jpg"], 1.05) is True and gate.counts() == {"classified": 2, "gated": 5}


def test_small_grey_copy_of_any_frame_shape(photos):
    bird = photos["bird.png"]
    assert small_grey(bird).shape == (48, 64)
    assert small_grey(cv2.cvtColor(bird, cv2.COLOR_BGR2GRAY)).shape == (48, 64)
    assert small_grey(cv2.cvtColor(bird, cv2.COLOR_BGR2BGRA)).shape == (48, 64)
    assert small_grey(bird[:10, :20]).shape == (10, 20)                     # small regions as they are
    gate = Gate(ON, settle=0)
    assert gate.decide(np.zeros((0, 0, 3), np.uint8), 0.0) is True          # the Preprocessor will refuse it


def test_gates_choose_only_the_regions_that_changed(photos):
    rng = np.random.default_rng(6)
    left, right = photos["bird.png"], photos["hot_dog.jpg"]
    gates = Gates({"a": Gate(ON, 0), "b": Gate(ON, 0)}, {"a": (0, 0, 0.5, 1), "b": (0.5, 0, 0.5, 1)}, crop)
    assert gates.active
    frame = np.hstack([left, right])
    assert gates.choose(noisy(frame, rng), 0.0) == {"a", "b"}
    assert gates.choose(noisy(frame, rng), 0.05) == frozenset()
    assert gates.choose(noisy(np.hstack([left, photos["owl.jpg"]]), rng), 0.1) == {"b"}


def test_region_settings_win_over_the_top_level():
    top = ClassifyConfig(motion=True, interval=60, threshold=20)
    assert resolve(top, RegionClassifyConfig()) == top
    assert resolve(top, RegionClassifyConfig(interval=0, min_area=0.2)) == \
        ClassifyConfig(motion=True, interval=0, threshold=20, min_area=0.2)
    assert not resolve(top, RegionClassifyConfig(motion=False, interval=0)).active


def test_config_keys_and_their_errors():
    cfg = schema.build(config_mod.Config, {"classify": {"motion": True, "interval": 30},
                                           "regions": [{"name": "door", "box": [0, 0, 1, 1],
                                                        "classify": {"threshold": 25}}]})
    assert cfg.classify == ClassifyConfig(motion=True, interval=30.0)
    assert resolve(cfg.classify, cfg.regions[0].classify).threshold == 25
    assert config_mod.Config().classify.active is False                     # off by default
    for data, key in [({"classify": {"motoin": True}}, "classify.motoin"),
                      ({"classify": {"motion": "yes"}}, "classify.motion"),
                      ({"classify": {"interval": -1}}, "classify.interval"),
                      ({"classify": {"threshold": 0}}, "classify.threshold"),
                      ({"classify": {"min_area": 1.5}}, "classify.min_area"),
                      ({"classify": True}, "classify"),
                      ({"regions": [{"name": "a", "box": [0, 0, 1, 1], "classify": {"interval": "1m"}}]},
                       "regions[0].classify.interval")]:
        with pytest.raises(ConfigError) as err:
            schema.build(config_mod.Config, data, file="edge.yaml")
        assert err.value.key == key and err.value.exit_code == 2, (data, str(err.value))


def test_counts_in_the_stats_line_and_metrics(photos):
    """Regions: `classified` and `gated` in each region's summary and as edge_runtime_region_{classified,
    gated}; the whole frame's gate: the stats line's `gate` and region="frame"; CPU seconds per hour."""
    class Publish:
        threshold, min_frames = 0.5, 1

    rng = np.random.default_rng(7)
    stats = Stats()
    regions = [RegionConfig(name="a", box=(0, 0, 0.5, 1)),
               RegionConfig(name="b", box=(0.5, 0, 0.5, 1), classify=RegionClassifyConfig(motion=False))]
    watch = Watch(regions, Publish, [], None, stats, classify=ON)
    watch.start()
    frame = np.hstack([photos["bird.png"], photos["owl.jpg"]])
    for i in range(10):
        watch.gates.choose(noisy(frame, rng), i * 0.05)
    line = stats.snapshot(final=True)
    assert {n: (s["classified"], s["gated"]) for n, s in line["regions"].items()} == {"a": (2, 8), "b": (10, 0)}
    assert isinstance(line["cpu_s_per_hour"], float) and line["cpu_s_per_hour"] >= 0
    text = Metrics(stats).exposition().decode()
    assert 'edge_runtime_region_classified_total{region="a"} 2.0' in text
    assert 'edge_runtime_region_gated_total{region="a"} 8.0' in text
    assert 'edge_runtime_region_gated_total{region="b"} 0.0' in text

    whole = Stats()
    watch = Watch((), Publish, [], None, whole, classify=ON)
    watch.start()
    for i in range(5):
        watch.gates.choose(noisy(frame, rng), i * 0.05)
    assert whole.snapshot()["gate"] == {"classified": 2, "gated": 3}
    assert 'edge_runtime_region_gated_total{region="frame"} 3.0' in Metrics(whole).exposition().decode()
    off = Stats()
    Watch((), Publish, [], None, off).start()
    assert "gate" not in off.snapshot() and "regions" not in off.snapshot()     # gate off: the line as before
