"""What a newcomer meets in the first ten minutes: an untrained model said so everywhere, errors that say
what to do, the per-frame inference figure, and a bench that owns up to a noisy machine."""

from __future__ import annotations

import os
import re

import pytest

from conftest import FIXTURES, REPO, daemon_env, run_daemon
from edge_runtime.cli.bench.command import flag_noise

pytestmark = pytest.mark.slow


def test_untrained_model_is_marked_in_every_record_and_stats_line(tiny_model):
    # tiny_model's metadata says "untrained (random init, seed 0)", as models/export.py --weights random writes
    result = run_daemon("--source", "synthetic://320x240", "--model", tiny_model, "--max-frames", "12",
                        "--stats-interval", "0.05")
    assert result.returncode == 0, result.stderr
    assert result.predictions and all(p.get("untrained") is True for p in result.predictions)
    assert result.stats and all(s["model"]["untrained"] is True for s in result.stats)
    assert "MODEL HAS UNTRAINED (RANDOM) WEIGHTS" in result.stderr and "fetch-model" in result.stderr
    assert "UNTRAINED MODEL" in result.stderr.splitlines()[-1]          # the final human stats line too


def test_trained_model_records_are_unchanged(channel_model):
    result = run_daemon("--source", "synthetic://320x240", "--model", channel_model, "--max-frames", "8")
    assert result.returncode == 0, result.stderr
    assert all("untrained" not in p for p in result.predictions)
    assert result.stats[-1]["model"]["untrained"] is False


def test_inference_per_frame_beside_the_batch_time(tiny_model):
    result = run_daemon("--source", "synthetic://320x240", "--model", tiny_model, "--max-frames", "40",
                        "--batch", "4", "--lanes", "1")
    lat = result.stats[-1]["latency_ms"]
    assert result.returncode == 0 and lat["inference_per_frame"]["p50"] is not None
    # One session.run for 4 frames: each frame's share is a quarter of the run.
    assert lat["inference_per_frame"]["p50"] == pytest.approx(lat["inference"]["p50"] / 4, rel=0.05)


def test_missing_model_names_the_absolute_path_tried(tmp_path):
    result = run_daemon("--source", "synthetic://64x64", "--model", "models/nope.onnx", cwd=tmp_path,
                        env=daemon_env(PYTHONPATH=str(REPO)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = [x for x in result.stderr.splitlines() if "ERROR" in x][0]
    assert str(tmp_path / "models" / "nope.onnx") in line and "relative to the current directory" in line


def test_model_without_description_says_write_a_sidecar():
    model = FIXTURES / "models" / "mobilenet_v1_0.75_192_quant.onnx"     # uint8 input, no sidecar
    result = run_daemon("--source", "synthetic://64x64", "--model", model, "--validate-config")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is uint8 but the description" in result.stderr
    assert re.search(rf"[Ww]rite {re.escape(str(model.with_suffix('.yaml')))} next to it", result.stderr)
    assert "Models and what they expect" in result.stderr


@pytest.mark.skipif(os.path.exists("/dev/video7"), reason="this machine has a /dev/video7")
def test_no_camera_suggests_what_to_try(tiny_model):
    result = run_daemon("--camera", "7", "--model", tiny_model)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no camera 7" in result.stderr and "synthetic://640x480" in result.stderr


def test_bench_flags_rounds_that_disagree(capsys):
    quiet = {"bare": {"fps_rounds": [400.0, 410.0, 395.0]}}
    flag_noise(quiet)
    assert "noisy" not in quiet and "noisy" not in capsys.readouterr().out
    busy = {"bare": {"fps_rounds": [230.0, 687.0, 500.0]}}
    flag_noise(busy)
    assert busy["noisy"]["spread"] == pytest.approx((687 - 230) / 687, abs=1e-3)
    assert "WARNING: noisy run" in capsys.readouterr().out


def test_model_that_onnxruntimes_last_optimisation_refuses_still_runs(fixtures, tmp_path):
    """tf2_mobilenet_v2 (a TF2 post-training-quantised model) fails onnxruntime 1.32's ORT_ENABLE_ALL;
    the daemon steps down one optimisation level, says so once, and classifies correctly."""
    model = tmp_path / "tf2.onnx"
    model.symlink_to(fixtures / "models" / "tf2_mobilenet_v2_1.0_224_ptq.onnx")
    sidecar = (fixtures / "models" / "mobilenet_v2_1.0_224_quant.yaml").read_text()
    model.with_suffix(".yaml").write_text(sidecar.replace("../imagenet_labels.txt",
                                                          str(fixtures / "imagenet_labels.txt")))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "coffee.png").symlink_to(fixtures / "photos" / "coffee.png")
    result = run_daemon("--source", photos, "--model", model)
    assert result.returncode == 0, result.stderr
    assert result.predictions[0]["top"][0]["label"] == "espresso"
    assert result.stderr.count("graph optimisation failed") == 1
