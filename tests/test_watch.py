"""Regions, events and snapshots in the real daemon (a subprocess): a clip of two real photos side by
side whose right half changes at a known frame, classified by a real pretrained fixture model; config
and flag errors as the user sees them. (The crops themselves are proved in-process in test_regions.py.)
MQTT and the live page with regions: test_watch_sinks.py."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness import run_daemon

pytestmark = pytest.mark.slow

MODEL = "mobilenet_v1_0.5_160_quant"
CHANGE_AT = 5           # the right half shows a hot dog before this frame, an owl from it on
FRAMES = 12
FEEDER_BOX = [0, 0, 0.5, 343 / 384]     # the bird photo is 343 px high on a 384 px frame
DOOR_BOX = [0.5, 0, 0.5, 1]


def photo(fixtures: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(fixtures / "photos" / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def write_clip(fixtures: Path, path: Path, frames: int = FRAMES, fps: float = 10.0) -> Path:
    """1024x384 MJPEG: a bird on the left throughout; a hot dog on the right, an owl from CHANGE_AT."""
    bird, hot_dog, owl = (photo(fixtures, n) for n in ("bird.png", "hot_dog.jpg", "owl.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (1024, 384))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((384, 1024, 3), np.uint8)
        frame[:343, :512] = bird
        frame[:, 512:] = hot_dog if i < CHANGE_AT else owl
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(fixtures, tmp_path_factory) -> Path:
    return write_clip(fixtures, tmp_path_factory.mktemp("clip") / "tiled.avi")


@pytest.fixture(scope="module")
def labels(fixtures) -> dict[str, str]:
    expected = json.loads((fixtures / "expected.json").read_text())["models"][MODEL]
    return {name.split(".")[0]: expected[name]["label"] for name in ("bird.png", "hot_dog.jpg", "owl.jpg")}


def model_path(fixtures: Path) -> str:
    return str(fixtures / "models" / f"{MODEL}.onnx")


def test_two_regions_records_one_event_per_change_and_snapshots(fixtures, clip, labels, tmp_path):
    """Config file: the door region uses its own model file, written relative to the config's folder
    (a link to the same fixture: a second session), snapshots in a relative folder, retention 2 files."""
    models = tmp_path / "m"
    models.mkdir()
    for src, dst in [(f"{MODEL}.onnx", "m/door.onnx"), (f"{MODEL}.yaml", "m/door.yaml")]:
        (tmp_path / dst).symlink_to(fixtures / "models" / src)
    (tmp_path / "imagenet_labels.txt").symlink_to(fixtures / "imagenet_labels.txt")   # the sidecar's ../
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"""
model: {model_path(fixtures)}
top_k: 2
publish: {{threshold: 0.5, min_frames: 3}}
regions:
  - {{name: feeder, box: {FEEDER_BOX}}}
  - {{name: door, box: {DOOR_BOX}, model: m/door.onnx, thresholds: {{"{labels['owl']}": 0.55}}}}
snapshots: {{dir: snaps, max_files: 2}}
""")
    result = run_daemon("--config", cfg, "--source", clip)
    assert result.returncode == 0, result.stderr

    preds = result.predictions
    assert [(p["frame"], p["region"]) for p in preds] == [(i, r) for i in range(FRAMES) for r in ("feeder", "door")]
    for p in preds:
        want = labels["bird"] if p["region"] == "feeder" else labels["hot_dog" if p["frame"] < CHANGE_AT else "owl"]
        assert p["top"][0]["label"] == want, p
        assert len(p["top"]) == 2 and set(p) == {"type", "frame", "ts", "source", "region", "top", "latency_ms"}

    events = [x for x in result.lines if x["type"] == "event"]
    assert [(e["region"], e["from"], e["to"], e["frame"]) for e in events] == [
        ("feeder", None, labels["bird"], 2),
        ("door", None, labels["hot_dog"], 2),
        ("door", labels["hot_dog"], labels["owl"], CHANGE_AT + 3 - 1),       # min_frames 3
    ]
    change = events[2]
    assert change["score"] >= 0.55 and change["previous_for_s"] >= 0
    # Each event line comes right after its frame's records, in frame order.
    lines = [x for x in result.lines if x["type"] in ("prediction", "event")]
    at = lines.index(change)
    assert (lines[at - 1]["frame"], lines[at - 1]["region"]) == (change["frame"], "door")

    # Snapshots: one per event, named after it; retention kept the newest two.
    snaps = tmp_path / "snaps"
    assert sorted(p.name for p in snaps.iterdir()) == sorted(e["snapshot"] for e in events[1:])
    assert change["snapshot"].endswith("_door_ruffed-grouse-partridge-bonasa-umbellus.jpg")
    for name in (events[1]["snapshot"], change["snapshot"]):
        image = cv2.imread(str(snaps / name))
        assert image is not None and image.shape == (384, 1024, 3)
        # The region's box is drawn on the full frame: red (BGR 0, 0, 255) along the door's left edge.
        edge = image[100:300, 512:514].reshape(-1, 3).astype(int)
        assert ((edge[:, 2] > 180) & (edge[:, 1] < 90) & (edge[:, 0] < 90)).mean() > 0.8

    final = result.stats[-1]
    assert final["frames_processed"] == FRAMES
    assert final["regions"] == {
        "feeder": {"frames": FRAMES, "state": labels["bird"], "score": events[0]["score"], "changes": 1, "refused": 0,
                   "classified": FRAMES, "gated": 0},
        "door": {"frames": FRAMES, "state": labels["owl"], "score": change["score"], "changes": 2, "refused": 0,
                 "classified": FRAMES, "gated": 0}}
    assert (final["snapshots_written"], final["snapshots_failed"]) == (3, 0)
    assert "2 region(s): feeder" in result.stderr and "event: door changed from" in result.stderr


def test_folder_source_regions_give_each_photos_top1(fixtures, tmp_path):
    """A folder holding one tiled picture (hot dog | coffee, PNG): each half's region gives its photo's own
    expected top-1 through the daemon's folder source."""
    expected = json.loads((fixtures / "expected.json").read_text())["models"][MODEL]
    hot_dog, coffee = photo(fixtures, "hot_dog.jpg"), photo(fixtures, "coffee.png")
    height, width = max(hot_dog.shape[0], coffee.shape[0]), hot_dog.shape[1] + coffee.shape[1]
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:hot_dog.shape[0], :hot_dog.shape[1]] = hot_dog
    canvas[:coffee.shape[0], hot_dog.shape[1]:] = coffee
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "tiled.png"), canvas)
    split = hot_dog.shape[1] / width
    result = run_daemon("--model", model_path(fixtures), "--source", tmp_path / "frames", "--top-k", "1",
                        "--region", f"left=0,0,{split},{hot_dog.shape[0] / height}",
                        "--region", f"right={split},0,{1 - split},{coffee.shape[0] / height}")
    assert result.returncode == 0, result.stderr
    tops = {p["region"]: p["top"][0] for p in result.predictions}
    assert all(p["path"].endswith("tiled.png") for p in result.predictions) and len(result.predictions) == 2
    for region, name in (("left", "hot_dog.jpg"), ("right", "coffee.png")):
        assert (tops[region]["index"], tops[region]["label"]) == (expected[name]["top1"], expected[name]["label"])


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody can write into, root included: chattr +i where the file system allows it, else (not
    root) mode 0555, else a file where the folder should be."""
    path.mkdir()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    path.rmdir()
    path.write_text("not a folder")
    yield path


def test_read_only_snapshot_folder_is_counted_and_classification_goes_on(fixtures, clip, labels, tmp_path):
    """Regions from --region flags, --quiet-predictions: the events still reach stdout."""
    with read_only_folder(tmp_path / "ro") as folder:
        cfg = tmp_path / "edge.yaml"
        cfg.write_text(f"snapshots: {{dir: {folder}}}\nregions: [{{name: ignored, box: [0, 0, 1, 1]}}]\n")
        result = run_daemon("--config", cfg, "--model", model_path(fixtures), "--source", clip,
                            "--region", "feeder=" + ",".join(map(str, FEEDER_BOX)),
                            "--region", "door=" + ",".join(map(str, DOOR_BOX)), "--quiet-predictions")
    assert result.returncode == 0, result.stderr
    assert result.predictions == []
    events = [x for x in result.lines if x["type"] == "event"]
    assert [(e["region"], e["to"], e["frame"]) for e in events] == [
        ("feeder", labels["bird"], 2), ("door", labels["hot_dog"], 2), ("door", labels["owl"], CHANGE_AT + 2)]
    final = result.stats[-1]
    assert final["frames_processed"] == FRAMES and set(final["regions"]) == {"feeder", "door"}   # flags replace
    assert (final["snapshots_written"], final["snapshots_failed"]) == (0, len(events))
    assert result.stderr.count("WARNING") == 1 and "snapshot" in result.stderr, result.stderr


def test_without_regions_the_whole_frame_is_the_region(channel_model, video_file):
    """No regions: prediction records as before (no "region"), no regions in stats, and the whole frame's
    state changes as events of the region `frame` (the video: red, green, blue, 10 frames each)."""
    result = run_daemon("--source", video_file, "--model", channel_model, "--top-k", "1")
    assert result.returncode == 0, result.stderr
    assert len(result.predictions) == 30 and not any("region" in p for p in result.predictions)
    events = [x for x in result.lines if x["type"] == "event"]
    assert [(e["region"], e["from"], e["to"], e["frame"], e["snapshot"]) for e in events] == [
        ("frame", None, "red", 2, None), ("frame", "red", "green", 12, None), ("frame", "green", "blue", 22, None)]
    assert "regions" not in result.stats[-1] and "snapshots_written" not in result.stats[-1]


BAD_CONFIGS = [
    # (regions YAML, key, value shown)
    ("[{name: door, box: [0.6, 0.1, 0.5, 0.5]}]", "regions[0].box", "[0.6, 0.1, 0.5, 0.5]"),
    ("[{name: door, box: [0.1, 0.1, 0, 0.5]}]", "regions[0].box", "[0.1, 0.1, 0.0, 0.5]"),
    ("[{name: door, box: [0, 0, 1, 1]}, {name: door, box: [0, 0, 0.5, 0.5]}]", "regions[1].name", "'door'"),
    ("[{name: door, box: [0, 0, 1, 1], colour: red}]", "regions[0].colour", "unknown key"),
    ("[{name: door, box: [0, 0, 1, 1], model: missing.onnx}]", None, "missing.onnx"),
]


@pytest.mark.parametrize("regions, key, value", BAD_CONFIGS)
def test_region_config_errors_exit_2_naming_file_key_and_value(tmp_path, channel_model, regions, key, value):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"regions: {regions}\n")
    result = run_daemon("--config", cfg, "--model", channel_model, "--source", "synthetic://64x48",
                        "--validate-config")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    if key is None:     # a region's model: named by its full path, resolved against the config's folder
        assert str(tmp_path / value) in errors[0]
    else:
        assert str(cfg) in errors[0] and f"key '{key}'" in errors[0] and value in errors[0], errors[0]


@pytest.mark.parametrize("flags, value", [
    (["door=0.5,0.1,0.4"], "'door=0.5,0.1,0.4'"),
    (["door=0.7,0,0.5,1"], "outside the frame"),
    (["door=0,0,0,1"], "above 0"),
    (["Door=0,0,1,1"], "'Door'"),
    (["door=0,0,1,1", "door=0,0,0.5,0.5"], "duplicate region name 'door'"),
])
def test_region_flag_errors(channel_model, flags, value):
    args = [arg for flag in flags for arg in ("--region", flag)]
    result = run_daemon("--model", channel_model, "--source", "synthetic://64x48", *args, "--validate-config")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "command line, key '--region'" in errors[0] and value in errors[0], errors[0]


def test_validate_config_loads_region_models(fixtures, channel_model, tmp_path):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"regions: [{{name: a, box: [0, 0, 0.5, 1]}}, {{name: b, box: [0.5, 0, 0.5, 1], "
                   f"model: {model_path(fixtures)}}}]\n")
    result = run_daemon("--config", cfg, "--model", channel_model, "--source", "synthetic://64x48",
                        "--validate-config")
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "2 region(s)" in result.stdout
