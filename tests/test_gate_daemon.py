"""The classify gate in the real daemon (a subprocess): paced noisy clips written here through OpenCV (MJPEG,
decoded by the daemon's own video source), classified by a real pretrained fixture model. The gate alone:
test_gate.py. What it saves in CPU is printed by `bench --gate`, not asserted here (no timing in tests)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness import Daemon, run_daemon

pytestmark = pytest.mark.slow

MODEL = "mobilenet_v1_0.5_160_quant"
V2 = "mobilenet_v2_1.0_224_quant.onnx"     # the bench's scene is no photo: this one is sure of it
FPS = 20.0
SIZE = 256                  # each photo 256x256; the frame is two of them side by side
FRAMES = 80
CHANGES = (25, 55)          # the right half: hot dog, owl from 25, hot dog again from 55
REGIONS = ["--region", "still=0,0,0.5,1", "--region", "door=0.5,0,0.5,1"]


def photo(fixtures: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(fixtures / "photos" / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames, sigma: float = 5.0, seed: int = 0) -> Path:
    """MJPEG at 20 fps; every frame gets its own sensor noise (Gaussian, `sigma` grey levels)."""
    rng = np.random.default_rng(seed)
    writer = None
    for frame in frames:
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (frame.shape[1], frame.shape[0]))
            assert writer.isOpened()
        writer.write(np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clips(fixtures, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gate")
    bird, hot_dog, owl = (photo(fixtures, n).astype(np.float32) for n in ("bird.png", "hot_dog.jpg", "owl.jpg"))

    def scene(i: int) -> np.ndarray:
        right = owl if CHANGES[0] <= i < CHANGES[1] else hot_dog
        return np.hstack([bird, right])

    return {
        "changes": write_clip(folder / "changes.avi", [scene(i) for i in range(FRAMES)]),
        "static": write_clip(folder / "static.avi", [bird for _ in range(FRAMES)], seed=1),     # the bird alone
        # Dusk: 0.08 grey levels darker a frame, 8 in all (never a change by the default threshold, 12).
        "drift": write_clip(folder / "drift.avi", [scene(0) - 0.08 * i for i in range(100)], seed=2),
    }


def model(fixtures: Path) -> str:
    return str(fixtures / "models" / f"{MODEL}.onnx")


def events(result) -> list[dict]:
    return [x for x in result.lines if x["type"] == "event"]


def classified(result, region: str) -> list[int]:
    return [p["frame"] for p in result.predictions if p.get("region", "frame") == region]


def test_gated_daemon_reports_the_ungated_state_changes(fixtures, clips, tmp_path):
    """Same labels, same order, each within 3 frames; a snapshot per event, of a frame that was classified;
    only the changed region is classified; the stats line and its counts say what was saved."""
    runs = {}
    for gate in (False, True):
        cfg = tmp_path / f"gate-{gate}.yaml"
        cfg.write_text(f"classify: {{motion: {str(gate).lower()}}}\nsnapshots: {{dir: snaps-{gate}}}\n")
        runs[gate] = run_daemon("--config", cfg, "--model", model(fixtures), "--source", clips["changes"],
                                "--realtime", "--top-k", "1", *REGIONS, timeout=120)
        assert runs[gate].returncode == 0, runs[gate].stderr
    ungated, gated = events(runs[False]), events(runs[True])
    assert [(e["region"], e["from"], e["to"]) for e in gated] == [(e["region"], e["from"], e["to"]) for e in ungated]
    assert len(ungated) == 4            # the first state of each region, and the door's two changes
    assert all(abs(g["frame"] - u["frame"]) <= 3 for g, u in zip(gated, ungated, strict=True)), (gated, ungated)

    # The still region: its first frame and the 3 that settle it (min_frames 3), then never again; the door
    # besides at each change and the 3 frames after it.
    assert classified(runs[True], "still") == [0, 1, 2, 3]
    assert classified(runs[True], "door") == [0, 1, 2, 3, *range(CHANGES[0], CHANGES[0] + 4),
                                              *range(CHANGES[1], CHANGES[1] + 4)]
    assert len(classified(runs[False], "door")) == FRAMES
    for event in gated:
        assert event["frame"] in classified(runs[True], event["region"])     # confirmed by a classified frame
        assert (tmp_path / "snaps-True" / event["snapshot"]).is_file()

    final = runs[True].stats[-1]
    assert {n: (r["classified"], r["gated"], r["changes"]) for n, r in final["regions"].items()} == \
        {"still": (4, FRAMES - 4, 1), "door": (12, FRAMES - 12, 3)}
    assert final["frames_processed"] == 12 and final["frames_gated"] == FRAMES - 12
    assert final["cpu_s_per_hour"] > 0 and runs[False].stats[-1]["frames_gated"] == 0
    assert "classify gate on for still, door" in runs[True].stderr


def test_a_still_noisy_scene_is_classified_once_and_settled_never_after(fixtures, clips):
    """The whole frame, gate from the flag: the first frame and its settling frames (min_frames 3) give the
    first state, as without the gate; after that, 76 frames of sensor noise are never classified."""
    result = run_daemon("--model", model(fixtures), "--source", clips["static"], "--realtime", "--top-k", "1",
                        "--classify-motion", timeout=120)
    assert result.returncode == 0, result.stderr
    assert classified(result, "frame") == [0, 1, 2, 3]
    expected = json.loads((fixtures / "expected.json").read_text())["models"][MODEL]["bird.png"]["label"]
    assert [(e["region"], e["from"], e["to"], e["frame"]) for e in events(result)] == [("frame", None, expected, 2)]
    final = result.stats[-1]
    assert final["gate"] == {"classified": 4, "gated": FRAMES - 4} and final["frames_gated"] == FRAMES - 4


def test_slow_drift_is_reclassified_at_the_interval_and_not_without_it(fixtures, clips, tmp_path):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("classify: {motion: true}\nregions:\n  - {name: bird, box: [0, 0, 0.5, 1], "
                   "classify: {interval: 1}}\n  - {name: door, box: [0.5, 0, 0.5, 1]}\n")
    result = run_daemon("--config", cfg, "--model", model(fixtures), "--source", clips["drift"], "--realtime",
                        "--top-k", "1", timeout=120)
    assert result.returncode == 0, result.stderr
    assert classified(result, "door") == [0, 1, 2, 3]       # no interval: the drift never reaches the model
    frames = classified(result, "bird")
    ts = {p["frame"]: p["ts"] for p in result.predictions if p["region"] == "bird"}
    starts = [f for f in frames if f - 1 not in frames]     # each interval's classification and its settling
    assert all(frames.count(s) == 1 and all(s + k in frames for k in range(4)) for s in starts), frames
    assert len(starts) >= 4, frames                          # 5 s of clip, 1 s interval
    gaps = [ts[b] - ts[a] for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.95 <= g <= 1.0 + 0.3 for g in gaps), gaps   # the first frame once 1 s has passed


@pytest.mark.parametrize("text, key, value", [
    ("classify: {motoin: true}", "classify.motoin", "unknown key"),
    ("classify: {motion: maybe}", "classify.motion", "'maybe'"),
    ("classify: {interval: -5}", "classify.interval", "-5"),
    ("classify: {threshold: 300}", "classify.threshold", "300"),
    ("regions: [{name: a, box: [0, 0, 1, 1], classify: {min_area: 2}}]", "regions[0].classify.min_area", "2"),
])
def test_config_errors_exit_2_naming_the_key(channel_model, tmp_path, text, key, value):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(text + "\n")
    result = run_daemon("--config", cfg, "--model", channel_model, "--source", "synthetic://64x48", "--validate-config")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(cfg) in errors[0] and f"key '{key}'" in errors[0] and value in errors[0], errors[0]


def test_flag_error_names_the_flag(channel_model):
    result = run_daemon("--model", channel_model, "--source", "synthetic://64x48", "--classify-interval", "-1",
                        "--validate-config")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "command line, key '--classify-interval'" in result.stderr, result.stderr


def test_reload_keeps_the_gates_picture(fixtures, clips, tmp_path):
    """A still scene, looped: after SIGHUP (a new threshold for the gate) the regions are not classified afresh;
    a reload is no change of the picture."""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("classify: {motion: true}\n")
    daemon = Daemon("--config", cfg, "--model", model(fixtures), "--source", clips["static"], "--realtime", "--loop",
                    "--top-k", "1", "--stats-interval", "0.3", *REGIONS)
    try:
        daemon.wait_for(lambda: any(x["type"] == "stats" and x["regions"]["still"]["gated"] > 20
                                    for x in daemon.lines()), timeout=60)
        assert {p["frame"] for p in daemon.predictions()} == {0, 1, 2, 3}
        cfg.write_text("classify: {motion: true, threshold: 20}\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: any(x["type"] == "stats" and x["reloads"] == 1 for x in daemon.lines()), timeout=60)
        time.sleep(1.0)     # 20 frames more on the new sessions
    finally:
        assert daemon.stop() == 0
    assert {p["frame"] for p in daemon.predictions()} == {0, 1, 2, 3}, daemon.stderr()[-2000:]
    final = daemon.final_stats()
    assert final["reloads"] == 1 and final["regions"]["still"]["classified"] == 4
    assert "classify changed" not in daemon.stderr()        # applied, not "takes a restart"


def test_bench_gate_prints_the_cpu_ratio_and_compares_the_events(fixtures, tmp_path):
    """`bench --gate` end to end on a short generated scene (its speed is not asserted: that is what the
    lead's quiet-machine run is for); both runs' state changes agree."""
    import subprocess
    import sys

    from harness import REPO, daemon_env

    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--gate", "--gate-seconds", "4",
                           "--gate-period", "2", "--model", str(fixtures / "models" / V2), "--out", str(out)],
                          cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gate = json.loads(next(out.glob("bench-*.json")).read_text())["gate"]
    assert gate["runs"]["ungated"]["frames"] == 80 and gate["runs"]["ungated"]["prediction_lines"] == 160
    assert gate["runs"]["gated"]["prediction_lines"] < 40 and gate["same_state_changes"] is True
    # The still region's first state, the door's and its 3 changes (a change every second).
    assert len(gate["runs"]["gated"]["events"]) == 5 and gate["cpu_ratio"] > 0
    assert f"with the gate / without = {gate['cpu_ratio']:.3f}" in proc.stdout


def test_two_lanes_gate_as_one_lane(fixtures, clips):
    """A file read as fast as it goes (2 lanes): the gate decides in frame order, so the same frames are
    classified as when paced, and the same state changes come."""
    runs = [run_daemon("--model", model(fixtures), "--source", clips["changes"], "--top-k", "1", *REGIONS, *paced,
                       "--classify-motion", timeout=120) for paced in ([], ["--realtime"])]
    for result in runs:
        assert result.returncode == 0, result.stderr
    assert "2 lanes" in runs[0].stderr, runs[0].stderr
    fast, paced = ({n: classified(r, n) for n in ("still", "door")} for r in runs)
    assert fast == paced and len(fast["door"]) == 12, fast
    assert [(e["region"], e["to"], e["frame"]) for e in events(runs[0])] == \
        [(e["region"], e["to"], e["frame"]) for e in events(runs[1])]


def test_whole_frame_batches_hold_only_the_changed_frames(channel_model, tmp_path):
    """The whole frame in batches of 4 (a model with a dynamic batch axis, 2 lanes): red, green, blue, 10
    noisy frames each. Gated, each colour's first 4 frames are classified, the same events come as without
    the gate, and the skipped frames give no line."""
    colours = [np.full((240, 320, 3), c, np.float32) for c in ((40, 40, 200), (40, 200, 40), (200, 40, 40))]
    clip = write_clip(tmp_path / "colours.avi", [colours[i // 10] for i in range(30)])
    runs = {gate: run_daemon("--model", channel_model, "--source", clip, "--top-k", "1", gate, timeout=120)
            for gate in ("--no-classify-motion", "--classify-motion")}
    for result in runs.values():
        assert result.returncode == 0, result.stderr
    gated, ungated = runs["--classify-motion"], runs["--no-classify-motion"]
    assert "4 frame(s) per inference" in gated.stderr, gated.stderr
    assert classified(gated, "frame") == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
    assert len(ungated.predictions) == 30
    assert [(e["to"], e["frame"]) for e in events(gated)] == [(e["to"], e["frame"]) for e in events(ungated)] == \
        [("red", 2), ("green", 12), ("blue", 22)]
    assert gated.stats[-1]["frames_gated"] == 18 and gated.stats[-1]["frames_processed"] == 12


def test_a_gated_still_scene_stays_healthy_and_metrics_count(fixtures, clips, tmp_path):
    """Minutes of nothing to classify are not a stall: /healthz stays 200 (http.unhealthy_after 1 s here), and
    /metrics counts what was classified and what was skipped, by region."""
    import urllib.request

    from harness import free_port

    port = free_port()
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(f"classify: {{motion: true}}\nhttp: {{listen: '127.0.0.1:{port}', unhealthy_after: 1}}\n")
    daemon = Daemon("--config", cfg, "--model", model(fixtures), "--source", clips["static"], "--realtime", "--loop",
                    "--top-k", "1", "--quiet-predictions", *REGIONS)
    try:
        daemon.wait_for(lambda: daemon.log_count("http: live view on"), timeout=60)
        time.sleep(3.0)         # 60 frames, none classified after the first 4
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200 and json.loads(health.read())["healthy"] is True
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        assert daemon.stop() == 0
    assert 'edge_runtime_region_classified_total{region="door"} 4.0' in metrics, metrics
    gated = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith('edge_runtime_region_gated_total{region="door"}')))
    assert gated >= 40
    assert float(next(line.split()[-1] for line in metrics.splitlines()
                      if line.startswith("edge_runtime_frames_gated_total"))) >= 40
