"""The real daemon as a subprocess, on every source that can exist here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import REPO, daemon_env, run_daemon, start_daemon

PREDICTION_KEYS = {"type", "frame", "ts", "source", "top", "latency_ms"}
STATS_KEYS = {"type", "ts", "elapsed_s", "frames_captured", "frames_processed", "frames_dropped",
              "source_reconnects", "fps", "latency_ms", "cpu_temp_c", "throttled", "rss_mb"}


def test_synthetic_predictions_and_stats(tiny_model):
    result = run_daemon("--source", "synthetic://640x480", "--model", tiny_model, "--max-frames", "50",
                        "--top-k", "3")
    assert result.returncode == 0, result.stderr
    preds = result.predictions
    assert len(preds) == 50
    assert [p["frame"] for p in preds] == list(range(50))       # unthrottled: frame by frame, none dropped
    for p in preds:
        assert PREDICTION_KEYS <= set(p) and len(p["top"]) == 3
        scores = [t["score"] for t in p["top"]]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
        assert p["top"][0]["label"] == f"class {p['top'][0]['index']}"
        assert p["latency_ms"]["total"] >= p["latency_ms"]["inference"] > 0
        assert abs(p["ts"] - time.time()) < 120
    final = result.stats[-1]
    assert STATS_KEYS <= set(final) and final.get("final") is True
    assert final["frames_processed"] == 50 and final["frames_dropped"] == 0
    assert final["fps"]["inference"] > 0 and final["latency_ms"]["inference"]["p95"] > 0
    assert final["rss_mb"] > 10
    assert "UNTRAINED" in result.stderr            # loud warning for random weights
    assert '{"type"' not in result.stderr            # JSON never mixed into the log


def test_video_file_frame_by_frame_and_colours(channel_model, video_file):
    result = run_daemon("--source", video_file, "--model", channel_model)
    assert result.returncode == 0, result.stderr
    labels = [p["top"][0]["label"] for p in result.predictions]
    assert [p["frame"] for p in result.predictions] == list(range(30))
    assert labels == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    uri = run_daemon("--source", f"file://{video_file}", "--model", channel_model, "--max-frames", "5")
    assert uri.returncode == 0 and len(uri.predictions) == 5


def test_video_file_loop_and_realtime(channel_model, video_file):
    looped = run_daemon("--source", video_file, "--model", channel_model, "--loop", "--max-frames", "75")
    assert looped.returncode == 0 and len(looped.predictions) == 75
    assert looped.predictions[30]["top"][0]["label"] == "red"          # back to the start
    t0 = time.monotonic()
    paced = run_daemon("--source", video_file, "--model", channel_model, "--realtime", "--quiet-predictions")
    elapsed = time.monotonic() - t0
    assert paced.returncode == 0 and paced.predictions == []
    assert paced.stats[-1]["frames_processed"] == 30
    assert elapsed > 0.9          # 30 frames at 30 fps cannot finish sooner when paced


def test_image_folder_with_broken_files(channel_model, tmp_path):
    colours = {"a_red.png": (0, 0, 255), "c_green.jpg": (0, 255, 0), "e_blue.png": (255, 0, 0)}
    for name, bgr in colours.items():
        cv2.imwrite(str(tmp_path / name), np.full((60, 80, 3), bgr, np.uint8))
    (tmp_path / "b_empty.png").write_bytes(b"")
    (tmp_path / "d_garbage.jpg").write_bytes(os.urandom(500))
    cv2.imwrite(str(tmp_path / "f_grey.png"), np.full((60, 80), 200, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    result = run_daemon("--source", tmp_path, "--model", channel_model)
    assert result.returncode == 0, result.stderr
    got = {os.path.basename(p["path"]): p["top"][0]["label"] for p in result.predictions}
    assert got == {"a_red.png": "red", "c_green.jpg": "green", "e_blue.png": "blue", "f_grey.png": got["f_grey.png"]}
    assert result.stats[-1]["frames_skipped"] == 2
    assert "b_empty.png" in result.stderr and "d_garbage.jpg" in result.stderr


def test_corrupt_video_is_refused_clearly(channel_model, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(20000))
    result = run_daemon("--source", garbage, "--model", channel_model)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "garbage.mp4" in result.stderr


def test_truncated_video_plays_what_it_has(channel_model, video_file, tmp_path):
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video_file.read_bytes()[: video_file.stat().st_size // 2])
    result = run_daemon("--source", cut, "--model", channel_model)
    assert result.returncode == 0, result.stderr
    assert 5 <= len(result.predictions) < 30


def test_live_synthetic_source_drops_stale_frames(tiny_model):
    # 300 fps offered to 1 slow inference thread: the newest frame wins, the rest are counted as dropped.
    result = run_daemon("--source", "synthetic://1280x720?fps=300", "--model", tiny_model, "--threads", "1",
                        "--max-frames", "40")
    assert result.returncode == 0, result.stderr
    final = result.stats[-1]
    frames = [p["frame"] for p in result.predictions]
    assert frames == sorted(frames) and len(frames) == 40
    assert final["frames_captured"] >= final["frames_processed"] + final["frames_dropped"] - 3
    if final["frames_captured"] > 45:
        assert final["frames_dropped"] > 0 and frames[-1] > 40


def test_sigterm_stops_within_2s_with_final_stats(tiny_model):
    proc = start_daemon("--source", "synthetic://640x480?fps=30", "--model", tiny_model, "--stats-interval", "60")
    line = proc.stdout.readline()                       # wait until it is running
    assert '"prediction"' in line
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert '"type":"stats"' in last and '"final":true' in last


def test_closed_stdout_pipe_ends_quietly(tiny_model):
    proc = start_daemon("--source", "synthetic://320x240", "--model", tiny_model)
    proc.stdout.readline()
    proc.stdout.close()
    proc.wait(timeout=10)
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_camera_without_a_camera_fails_fast_with_exit_2(tiny_model):
    t0 = time.monotonic()
    result = run_daemon("--camera", "7", "--model", tiny_model, timeout=20)
    assert time.monotonic() - t0 < 10
    assert result.returncode == 2
    assert "/dev/video7 does not exist" in result.stderr and "picamera2" in result.stderr
    assert "Traceback" not in result.stderr


def test_stream_that_never_answers_is_retried_then_stopped(tiny_model):
    # Nothing listens on this port: the daemon keeps retrying (a live source), logs the loss once,
    # and a SIGTERM during the reconnect wait still stops it promptly.
    proc = start_daemon("--source", "http://127.0.0.1:9/stream.mjpg", "--model", tiny_model)
    time.sleep(3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err.count("source lost") == 1
    assert '"final":true' in out


def test_missing_default_model_says_how_to_make_one(tmp_path):
    shutil.copytree(REPO / "edge_runtime", tmp_path / "edge_runtime")
    result = run_daemon("--source", "synthetic://64x64", cwd=tmp_path, env=daemon_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 2
    assert "models/export.py" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("uri, message", [
    ("synthetic://banana", "WIDTHxHEIGHT"),
    ("/no/such/clip.mp4", "no such file"),
    ("ftp://host/x", "unknown scheme"),
    ("/dev/video42", "/dev/video42 does not exist"),
])
def test_bad_source_strings(uri, message, tiny_model):
    result = run_daemon("--source", uri, "--model", tiny_model)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_stdout_reader_that_stops_reading_does_not_stall_inference(tiny_model):
    """Nobody reads stdout (the pipe fills up): inference goes on, RSS stays bounded, SIGTERM still works."""
    proc = start_daemon("--source", "synthetic://320x240?fps=200", "--model", tiny_model, "--threads", "1",
                        "--stats-interval", "1")
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()
    time.sleep(6)                          # 64 KiB of pipe is full after well under a second
    processed = [int(m.group(1)) for line in err_lines for m in [re.search(r"processed (\d+)", line)] if m]
    rss = [float(m.group(1)) for line in err_lines for m in [re.search(r"rss ([\d.]+) MB", line)] if m]
    assert len(processed) >= 4 and processed[-1] > processed[1] + 200, err_lines
    assert max(rss) - rss[1] < 20
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert time.monotonic() - t0 < 5 and proc.returncode == 0


def test_file_source_with_a_reader_that_stops_reading_still_obeys_sigterm(tiny_model, video_file):
    """A file waits on its reader (backpressure), so a write can block for ever: SIGTERM must still end it."""
    proc = start_daemon("--source", video_file, "--loop", "--model", tiny_model, "--stats-interval", "1")
    time.sleep(3)                          # the pipe is full; the daemon is blocked writing to it
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    err = proc.stderr.read()
    assert proc.returncode == 0 and time.monotonic() - t0 < 8, err[-1000:]
    assert "SIGTERM received" in err and "Traceback" not in err


def test_sigterm_during_startup(tiny_model):
    proc = start_daemon("--source", "synthetic://640x480", "--model", tiny_model)
    time.sleep(0.3)                        # still importing or loading the model
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith('{"type":"stats"') and "Traceback" not in err


def test_runs_under_a_memory_limit_and_a_read_only_filesystem(tiny_model, video_file):
    """Fault 8: `ulimit -v` (address-space limit) and a root filesystem mounted read-only, as under the
    unit's ProtectSystem=strict; the daemon writes nothing, so it must not care."""
    limited = subprocess.run(["bash", "-c", f"ulimit -v 1500000 && exec {sys.executable} -m edge_runtime "
                              f"--source {video_file} --model {tiny_model} --quiet-predictions"],
                             capture_output=True, text=True, timeout=60, env=daemon_env(), cwd=REPO)
    assert limited.returncode == 0, limited.stderr
    assert '"frames_processed":30' in limited.stdout
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the read-only part needs root and unshare (util-linux)")
    script = (f"mount -o remount,bind,ro / && ! touch {REPO}/.rw-probe 2>/dev/null && "
              f"exec {sys.executable} -m edge_runtime --source {video_file} --model {tiny_model} --quiet-predictions")
    ro = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                        capture_output=True, text=True, timeout=60, env=daemon_env(), cwd=REPO)
    assert ro.returncode == 0, ro.stderr
    assert '"frames_processed":30' in ro.stdout and "Traceback" not in ro.stderr


@pytest.mark.parametrize("lanes", ["1", "2", "3"])
def test_lanes_publish_every_frame_once_in_order(channel_model, video_file, lanes):
    # Lanes classify successive frames side by side; what the user sees must not change.
    result = run_daemon("--source", video_file, "--model", channel_model, "--lanes", lanes, "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert [p["frame"] for p in result.predictions] == list(range(30))
    assert [p["top"][0]["label"] for p in result.predictions] == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    assert result.stats[-1]["frames_processed"] == 30
    assert (f"{lanes} lanes of 1 thread(s)" in result.stderr) == (lanes != "1")
    capped = run_daemon("--source", video_file, "--model", channel_model, "--lanes", lanes, "--loop",
                        "--max-frames", "47")
    assert capped.returncode == 0, capped.stderr
    assert [p["frame"] for p in capped.predictions] == list(range(47))      # indices run on across loops
    assert capped.predictions[30]["top"][0]["label"] == "red"
    assert capped.stats[-1]["frames_processed"] == 47


@pytest.mark.parametrize("batch", ["1", "4", "7"])
def test_batches_give_every_frame_its_own_prediction(channel_model, video_file, batch):
    # Several frames per session.run: a batch spans the red/green and green/blue cuts of the clip,
    # so a slot mixed up with another (or a stale slot reused) shows as a wrong colour.
    result = run_daemon("--source", video_file, "--model", channel_model, "--batch", batch, "--threads", "2")
    assert result.returncode == 0, result.stderr
    assert [p["frame"] for p in result.predictions] == list(range(30))
    assert [p["top"][0]["label"] for p in result.predictions] == ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    assert f"{batch} frame(s) per inference" in result.stderr
    capped = run_daemon("--source", video_file, "--model", channel_model, "--batch", batch, "--loop",
                        "--max-frames", "47")
    assert [p["frame"] for p in capped.predictions] == list(range(47))
    assert capped.stats[-1]["frames_processed"] == 47 and capped.stats[-1]["frames_captured"] <= 47 + 2


def test_batch_policy(tiny_model, video_file, fixtures):
    from edge_runtime.config import AUTO_BATCH
    files = run_daemon("--source", video_file, "--model", tiny_model, "--threads", "2", "--max-frames", "5")
    assert f"{AUTO_BATCH} frame(s) per inference" in files.stderr
    # Live and paced sources classify the newest frame at once, never waiting to fill a batch.
    live = run_daemon("--source", "synthetic://320x240?fps=30", "--model", tiny_model, "--batch", "4",
                      "--max-frames", "5")
    assert live.returncode == 0 and "per inference" not in live.stderr and "one frame at a time" in live.stderr
    paced = run_daemon("--source", video_file, "--model", tiny_model, "--realtime", "--lanes", "1",
                       "--max-frames", "3")
    assert paced.returncode == 0 and "per inference" not in paced.stderr
    # A model exported with a fixed batch of 1: auto falls back to 1; asking for more is a clear error.
    fixed = fixtures / "models" / "mobilenet_v2_1.0_224_quant.onnx"
    auto = run_daemon("--source", video_file, "--model", fixed, "--lanes", "1", "--max-frames", "3")
    assert auto.returncode == 0 and "per inference" not in auto.stderr
    for extra in ((), ("--validate-config",)):
        bad = run_daemon("--source", video_file, "--model", fixed, "--batch", "4", *extra)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "fixed batch size of 1" in bad.stderr and "--batch" in bad.stderr and fixed.name in bad.stderr
    assert run_daemon("--source", video_file, "--model", tiny_model, "--batch", "-1").returncode == 2


def test_camera_rate_source_does_not_spin_cores(fixtures):
    # Between a 30 fps camera's frames there is nothing to do: onnxruntime's worker threads must
    # sleep, not spin-wait (spinning burned a whole core here). EDGE_ORT_SPINNING=1 brings it back.
    # A small real model, so that the frames' own work stays far below a core on any host (MobileNetV2
    # 224 quantised takes 14 ms a frame on an AVX2-only EPYC: 0.42 cores at 30 fps before any waiting).
    model = fixtures / "models" / "mobilenet_v1_0.25_128_quant.onnx"
    args = ("--source", "synthetic://640x480?fps=30", "--model", model, "--threads", "2", "--max-frames", "75",
            "--stats-interval", "60")
    used = {}
    for spin in (None, "1"):
        env = daemon_env()
        env.pop("EDGE_ORT_SPINNING", None)
        if spin is not None:
            env["EDGE_ORT_SPINNING"] = spin
        before = os.times()
        t0 = time.monotonic()
        result = run_daemon(*args, env=env)
        wall, after = time.monotonic() - t0, os.times()
        assert result.returncode == 0 and result.stdout.count('"type":"prediction"') == 75
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        used[spin] = cpu / wall
        assert ("2 thread(s) (no spin-wait)" in result.stderr) == (spin is None)
    assert used[None] < 0.5, used        # measured 0.36 with startup (1.16 spinning)
    assert used["1"] > 2 * used[None] and used["1"] - used[None] > 0.5, used


def test_lanes_default_two_for_files_one_for_live(tiny_model, video_file):
    from edge_runtime.core.plan import lane_count
    assert lane_count(0, live=False, threads=4) == 2 and lane_count(0, live=False, threads=1) == 1
    assert lane_count(0, live=True, threads=4) == 1 and lane_count(3, live=True, threads=4) == 3
    files = run_daemon("--source", video_file, "--model", tiny_model, "--threads", "2", "--max-frames", "5")
    assert "2 lanes of 1 thread(s), one shared session" in files.stderr and "2 thread(s)" not in files.stderr
    # Lanes of several threads each get a session (and a thread pool) of their own.
    wide = run_daemon("--source", video_file, "--model", tiny_model, "--threads", "4", "--max-frames", "5")
    assert wide.returncode == 0 and "2 lanes of 2 thread(s), 4 frame(s)" in wide.stderr
    assert "no spin-wait" not in wide.stderr        # back-to-back inference: workers spin between sections
    live = run_daemon("--source", "synthetic://320x240?fps=30", "--model", tiny_model, "--threads", "2",
                      "--max-frames", "5")
    assert live.returncode == 0 and "lanes" not in live.stderr and "2 thread(s)" in live.stderr
    bad = run_daemon("--source", video_file, "--model", tiny_model, "--lanes", "-1")
    assert bad.returncode == 2 and "--lanes" in bad.stderr and "Traceback" not in bad.stderr
