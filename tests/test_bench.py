"""`python -m edge_runtime bench` runs end to end and writes what it promises (speed is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, daemon_env
from edge_runtime.cli.bench.measure import KERNEL_FEATURES, make_video, video_info


def test_bench_writes_json_and_chart(tiny_model, video_file, tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model),
                           "--video", str(video_file), "--threads", "2", "--seconds", "0.3", "--frames", "60",
                           "--repeats", "1", "--no-sweep", "--out", str(out)],
                          cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(out.glob("bench-*.json")).read_text())
    # The user's own clip is the one decoded, and the run says what it was.
    assert result["video"] == {"path": str(video_file), "codec": "MJPG", "width": 640, "height": 480, "frames": 30,
                               "generated": False}
    assert f"video: {video_file} (MJPG, 640x480, 30 frames, looped)" in proc.stdout
    # The CPU features that decide onnxruntime's kernels (INT8 above all) are printed with the machine.
    flags = {w for line in open("/proc/cpuinfo") if line.lower().startswith(("flags", "features"))
             for w in line.split(":", 1)[1].split()}
    assert result["machine"]["cpu_features"] == [f for f in KERNEL_FEATURES if f in flags]
    assert result["machine"]["cores"] >= 1 and result["lanes"] == 2 and result["batch"] == 4
    assert result["bare_batched"]["batch"] == 4 and result["bare_batched"]["fps"] > 0
    for name in ("synthetic", "video", "synthetic_batch1", "video_batch1", "synthetic_one_lane", "video_one_lane"):
        run = result["daemon"][name]
        assert run["frames"] == 60 and run["prediction_lines"] == 60
        assert run["ratio_vs_bare"] == round(run["fps"] / result["bare"]["fps"], 3) > 0
        assert len(run["ratio_rounds"]) == 1
    assert set(result["stages"]) == {"capture_synthetic", "capture_video", "preprocess", "inference",
                                     "postprocess", "publish"}
    assert result["daemon"]["live_30fps"]["total_latency_ms"]["p95_ms"] > 0
    chart = cv2.imread(str(next(out.glob("bench-*.png"))))
    assert chart is not None and chart.shape[1] >= 800
    assert result["daemon"]["synthetic"]["ratio_vs_bare_batched"] > 0
    assert "daemon on synthetic (2 lane(s), batch 4)" in proc.stdout
    assert "daemon on video_one_lane (1 lane(s), batch 1)" in proc.stdout
    # The bound: the daemon's own lanes measured bare, plus every frame's other work on the same cores.
    lanes = result["bare_lanes"]
    assert (lanes["lanes"], lanes["threads_per_lane"], lanes["batch"]) == (2, 1, 4) and lanes["fps"] > 0
    bound = result["ceiling"]
    for name in ("synthetic", "video"):
        assert bound[name]["fps"] <= lanes["fps"]
        assert bound[name]["ratio_vs_bare"] == round(bound[name]["fps"] / result["bare"]["fps"], 3)
        assert bound[name]["daemon_share"] == round(result["daemon"][name]["fps"] / bound[name]["fps"], 3)
        assert f"ceiling on {name}: " in proc.stdout
    # Decoding a video costs more than handing over a synthetic frame, so its bound is lower.
    assert bound["video"]["core_ms_per_frame"] > bound["synthetic"]["core_ms_per_frame"]
    assert bound["video"]["fps"] < bound["synthetic"]["fps"]
    assert result["daemon"]["video"]["ratio_median"] == result["daemon"]["video"]["ratio_rounds"][0]


def test_generated_clip_is_the_size_asked_for(tmp_path):
    clip = make_video(tmp_path / "bench.avi", 320, 240, frames=12)
    assert video_info(clip) == {"path": str(clip), "codec": "MJPG", "width": 320, "height": 240, "frames": 12}
    cap = cv2.VideoCapture(str(clip))
    first, second = cap.read()[1], cap.read()[1]
    assert first.shape == (240, 320, 3) and not np.array_equal(first, second)   # it moves: frames differ


def test_bench_names_a_video_it_cannot_open(tiny_model, tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"not a video")
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model),
                           "--video", str(bogus), "--out", str(tmp_path / "out")],
                          cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"--video: {bogus}: OpenCV cannot open this video" in proc.stderr


def test_bench_regions_compares_with_bare_batch_n(tiny_model, video_file, tmp_path):
    """`--regions N`: the daemon with N regions of one model against bare session.run at batch N, one run."""
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model),
                           "--video", str(video_file), "--threads", "2", "--seconds", "0.3", "--frames", "40",
                           "--repeats", "1", "--regions", "3", "--out", str(out)],
                          cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    regions = json.loads(next(out.glob("bench-*.json")).read_text())["regions"]
    assert regions["regions"] == 3 and regions["batch_axis_dynamic"] is True
    assert regions["bare"]["batch"] == 3 and regions["bare"]["fps"] > 0
    assert regions["bare_ms_per_frame"] == round(3 * 1000.0 / regions["bare"]["fps"], 4)
    lanes = regions["bare_lanes"]        # bare in the daemon's own arrangement, at batch N too
    assert lanes["batch"] == 3 and lanes["fps"] > 0 and lanes["lanes"] * lanes["threads_per_lane"] >= 1
    assert regions["bare_lanes_ms_per_frame"] == round(3 * 1000.0 / lanes["fps"], 4)
    for name in ("synthetic", "video"):
        run = regions[name]
        assert run["frames"] == 40 and run["prediction_lines"] == 120          # a record per region per frame
        assert run["cost_ratio"] == pytest.approx(run["ms_per_frame"] / regions["bare_ms_per_frame"], abs=0.002)
        assert run["cost_ratio_vs_lanes"] == pytest.approx(run["ms_per_frame"] / regions["bare_lanes_ms_per_frame"],
                                                           abs=0.002)
        assert f"3 regions on {name}: " in proc.stdout and f"Cost ratio {run['cost_ratio']:.3f}" in proc.stdout
        lane = run["lane_ms"]           # a lane's frame: crops + session.run + the rest
        assert lane["crops"] > 0 and lane["session_run"] > 0 and lane["bare_session_run"] > 0
        assert lane["cycle"] == pytest.approx(run["ms_per_frame"] * lanes["lanes"], abs=0.002)
        assert lane["rest"] == pytest.approx(lane["cycle"] - lane["crops"] - lane["session_run"], abs=0.002)
    assert regions["meets_target"] == (regions["synthetic"]["cost_ratio"] <= 1.1)
    assert "target: N regions cost at most N x the bare batch-3 cost per image + 10%" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model), "--regions", "0"],
                         cwd=REPO, env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--regions: expected 1 to 64, got 0" in bad.stderr


def test_bench_takes_the_daemons_config_and_flags(tmp_path, monkeypatch, capsys):
    """--config: the daemon's model (relative to the file) and threads; --model/--threads on top; a wrong
    config is the daemon's one line, exit 2. Without either, the model is found from any folder."""
    from edge_runtime.cli.bench import command as bench

    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "config.yaml"
    config.write_text("model: ../models/m.onnx\nthreads: 3\n")

    def settled(*argv):
        args = bench.build_parser().parse_args(list(argv))
        bench.settle_model(args)
        return args.model, args.threads

    model, threads = settled("--config", str(config))
    assert Path(model).resolve() == (tmp_path / "models" / "m.onnx").resolve() and threads == 3
    assert settled("--config", str(config), "--model", "x.onnx", "--threads", "1") == ("x.onnx", 1)
    monkeypatch.chdir(tmp_path)                  # not the repository: the repository's model all the same
    model, threads = settled()
    assert model == str(REPO / "models" / "mobilenetv3_small.onnx") and threads == 0
    config.write_text("model: m.onnx\nthreadz: 3\n")
    assert bench.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "threadz" in err[0] and str(config) in err[0]
    assert "the ONNX model to measure" in bench.build_parser().format_help()


def test_bench_compares_two_models_on_the_same_frames(tiny_model, channel_model, video_file, tmp_path):
    """--model twice: each model bare on the same decoded frames and in the daemon, ratios to the first."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model),
                           "--model", str(channel_model), "--video", str(video_file), "--threads", "1",
                           "--seconds", "0.2", "--frames", "20", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    compare = json.loads(next(out.glob("bench-*.json")).read_text())["compare"]
    rows = compare["models"]
    assert [r["model"] for r in rows] == [str(tiny_model), str(channel_model)] and compare["frames"] == 64
    assert all(r["engine"] == "onnxruntime" and r["bare"]["fps"] > 0 and r["daemon"]["fps"] > 0 for r in rows)
    assert rows[0]["bare_ratio_vs_first"] == 1.0 and rows[1]["top1_agreement_with_first"] is None   # 1000 vs 3
    assert "engines on the same 64 frames" in proc.stdout and "x bare" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(tiny_model),
                              "--model", str(tmp_path / "nope.tflite")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.tflite not found" in missing.stderr

