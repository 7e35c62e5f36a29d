"""The whole "teach it your own classes" loop, as a user runs it, with real parts end to end:

a generated scene with a door that is open or closed in one region of a 320x240 frame → `python -m
edge_runtime collect --region door` from a training clip per state → `models/distill.py --data DIR
--init random` (a few epochs at 32x32) → the trained ONNX copied over the model file of the running
daemon's region → SIGHUP → a held-out clip with known state changes, whose region events must follow
the true state on at least 90% of the changes.

The held-out clip reaches the running daemon as a --realtime video (paced at its own frame rate) whose
first seconds are a still warm-up: the daemon starts on it with an untrained model, the SIGHUP comes at
its first predictions, and the reload is over long before the changes begin. The test checks that
(the first frame with the new model's labels comes before the first change) rather than assuming it.

This is a test of the loop, not of learning: the scene is easy (a brown door panel, or a dark doorway
with the panel edge-on), with enough jitter (blocky background, position, brightness, noise) that no two
frames are alike, so collect keeps every considered frame.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from harness import REPO, Daemon, daemon_env, run_daemon
from tiny_model import make_channel_model, make_random_model

# distill.py trains with PyTorch (the workstation side of the loop)
pytest.importorskip("torch", reason="needs PyTorch: ./install.sh --dev --models")

pytestmark = pytest.mark.slow

W, H = 320, 240
BOX = [0.5, 0.2, 0.4, 0.5]            # the region "door": 128x120 pixels of the frame
STATES = ("closed", "open")
PER_STATE = 50                        # images collected per state
TRAIN_FPS = 10
FPS = 20                              # the held-out clip, paced at this rate by --realtime
WARMUP_S = 8                          # still "closed" at the start of the held-out clip: the reload happens here
CHANGES = 20
FOLLOW_WITHIN = 10                    # frames (0.5 s): min_frames (3) plus slack for a doubtful frame
PANEL, KNOB, DOORWAY = (40, 90, 170), (30, 200, 230), (25, 25, 25)     # BGR


def draw(rng: np.random.Generator, state: str) -> np.ndarray:
    """One 320x240 frame: a random blocky wall, the door in the region, jittered and noisy."""
    blocks = rng.integers(60, 200, (6, 8, 3), dtype=np.uint8)
    image = cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int16)
    x0, y0, w, h = int(BOX[0] * W), int(BOX[1] * H), int(BOX[2] * W), int(BOX[3] * H)
    jx, jy = rng.integers(-4, 5, 2)
    left, top, right, bottom = x0 + 16 + jx, y0 + 8 + jy, x0 + w - 16 + jx, y0 + h + jy
    if state == "closed":
        image[top:bottom, left:right] = PANEL
        middle = (top + bottom) // 2
        image[middle - 4:middle + 4, right - 20:right - 12] = KNOB
    else:
        image[top:bottom, left:right] = DOORWAY
        image[top:bottom, left:left + 10] = PANEL       # the open panel, edge-on
    image += rng.integers(-25, 26) + rng.normal(0, 6, image.shape).astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_clip(path, states: list[str], fps: int, seed: int):
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (W, H))
    assert writer.isOpened()
    for state in states:
        writer.write(draw(rng, state))
    writer.release()
    return path


def held_out_states(seed: int) -> tuple[list[str], list[int]]:
    """The held-out clip's true state per frame, and the frames where it changes: a still warm-up, then
    CHANGES segments of 0.75 to 1.5 s, alternating open and closed."""
    rng = np.random.default_rng(seed)
    states = ["closed"] * (WARMUP_S * FPS)
    changes = []
    for i in range(CHANGES):
        changes.append(len(states))
        states += [STATES[(i + 1) % 2]] * int(rng.integers(15, 31))
    return states, changes


def test_collect_train_reload_and_follow_the_door(tmp_path):
    # 1. Collect, on the "board": a training clip per state, the region's crops, through the real CLI.
    config = tmp_path / "edge.yaml"
    config.write_text(f"model: frame.onnx\nstats_interval: 2\n"
                      f"regions:\n  - name: door\n    box: {BOX}\n    model: door.onnx\n")
    data = tmp_path / "dataset"
    for seed, state in enumerate(STATES, start=1):
        clip = write_clip(tmp_path / f"train_{state}.avi", [state] * (PER_STATE + 10), TRAIN_FPS, seed)
        result = run_daemon("collect", "--source", clip, "--config", config, "--region", "door", "--out", data,
                            "--label", state, "--every", 0, "--count", PER_STATE)
        assert result.returncode == 0, result.stderr
        assert f"collect: done: saved {PER_STATE}, skipped 0" in result.stderr
        crops = sorted((data / state).glob("door_*.jpg"))
        assert len(crops) == PER_STATE and cv2.imread(str(crops[0])).shape == (120, 128, 3)

    # 2. Train, on the "workstation": the folder as collect left it, a random-init student at 32x32.
    trained = tmp_path / "workstation" / "door.onnx"
    distill = subprocess.run(
        [sys.executable, "models/distill.py", "--data", str(data), "--output", str(trained), "--init", "random",
         "--input-size", "32", "--epochs", "8", "--teacher-epochs", "2", "--batch-size", "8", "--workers", "0",
         "--threads", "2", "--seed", "0", "--no-progress"],
        cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=600)
    assert distill.returncode == 0, distill.stdout[-2000:] + distill.stderr[-2000:]
    assert "per-class accuracy:" in distill.stdout and trained.exists()

    # 3. The running daemon: its region's model file holds an untrained 2-class net ("class 0", "class 1").
    make_channel_model(tmp_path / "frame.onnx")
    make_random_model(tmp_path / "door.onnx", size=(32, 32), classes=2, resize=None)
    states, changes = held_out_states(seed=7)
    clip = write_clip(tmp_path / "held_out.avi", states, FPS, seed=3)
    daemon = Daemon("--config", config, "--source", clip, "--realtime", env=daemon_env())
    try:
        daemon.wait_for(lambda: any(p.get("region") == "door" for p in daemon.predictions()), 60)
        assert daemon.predictions()[0]["top"][0]["label"].startswith("class ")
        shutil.copyfile(trained, tmp_path / "door.onnx")          # as `cp` or `install` would
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: "reload: now classifying" in daemon.stderr(), 60)
        code = daemon.proc.wait(WARMUP_S + len(states) / FPS + 60)     # the clip ends: the daemon exits
    finally:
        daemon.kill()
    assert code == 0, daemon.stderr()[-3000:]
    assert "Traceback" not in daemon.stderr() and "reload refused" not in daemon.stderr()

    lines = [json.loads(line) for line in daemon.raw_lines()]
    predictions = [x for x in lines if x["type"] == "prediction" and x.get("region") == "door"]
    events = [x for x in lines if x["type"] == "event" and x["region"] == "door"]
    assert [p["frame"] for p in predictions] == list(range(len(states)))      # every frame, in order
    # The reload took effect during the warm-up: the untrained model's last frame comes before the first
    # change. (Two lanes take the new model each at its next frame: the last old frame, not the first new one.)
    old = [p["frame"] for p in predictions if p["top"][0]["label"] not in STATES]
    assert old and old[0] == 0, "the untrained model did not classify the first frames"
    swapped = old[-1] + 1
    assert swapped < changes[0], \
        f"the reload took effect at frame {swapped}, not before the first change at frame {changes[0]}"
    assert all(p["top"][0]["label"].startswith("class ") for p in predictions if p["frame"] < swapped - 2)

    # 4. The region's events follow the door: each change gets one event to the true state within
    # FOLLOW_WITHIN frames, and no other event until the next change.
    followed = []
    for i, start in enumerate(changes):
        end = changes[i + 1] if i + 1 < len(changes) else len(states)
        seen = [(e["frame"], e["to"]) for e in events if start <= e["frame"] < end]
        followed.append(len(seen) == 1 and seen[0][1] == states[start] and seen[0][0] < start + FOLLOW_WITHIN)
    report = [(start, states[start], [(e["frame"], e["to"]) for e in events if e["frame"] >= start][:2])
              for start, ok in zip(changes, followed, strict=True) if not ok]
    assert sum(followed) >= 0.9 * len(changes), f"{sum(followed)}/{len(changes)} changes followed; missed: {report}"
    # ... and the warm-up ends in the trained model's "closed" (the first event after the swap).
    assert [e["to"] for e in events if swapped <= e["frame"] < changes[0]] == ["closed"]
