"""`.tflite` models through LiteRT, the second engine: the real Coral MobileNets against their ONNX twins,
a Teachable Machine-style export made here, broken files, the missing extra, reload across engines.

Tests that run LiteRT skip without ai-edge-litert (`./install.sh --dev --litert`; CI's second step installs
it). The tests of what happens without it hide the installed package from the daemon's interpreter, so
they run either way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, REPO, run_daemon
from harness import Daemon, daemon_env, wait_until
from tflite_model import LITERT_MISSING, embed_labels, litert_available, make_channel_tflite
from tiny_model import make_channel_model

from edge_runtime.engines import REGISTRY, detect, load_engine
from edge_runtime.util.errors import ModelError

needs_litert = pytest.mark.skipif(not litert_available(), reason=LITERT_MISSING)

_EXPECTED_FILE = FIXTURES / "expected.json"
EXPECTED = json.loads(_EXPECTED_FILE.read_text())["models"] if _EXPECTED_FILE.exists() else {}
CORAL = ["mobilenet_v2_1.0_224_quant", "mobilenet_v1_0.25_128_quant"]


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ERROR" in line]


def no_litert_env(tmp_path: Path) -> dict:
    """The daemon's environment with ai-edge-litert hidden: a package of that name first on the path
    whose import fails as a missing one does."""
    hide = tmp_path / "hide-litert"
    (hide / "ai_edge_litert").mkdir(parents=True, exist_ok=True)
    (hide / "ai_edge_litert" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ai_edge_litert'\", name='ai_edge_litert')\n")
    return daemon_env(PYTHONPATH=f"{hide}{os.pathsep}{REPO}")


@pytest.fixture(scope="module")
def photo_folder(fixtures, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")       # copied at test time, never into the repo
    for photo in (fixtures / "photos").iterdir():
        shutil.copy(photo, folder / photo.name)
    return folder


def coral_with_sidecar(fixtures: Path, model: str, folder: Path) -> Path:
    """The fixture .tflite beside the sidecar of its ONNX twin (models/<name>.yaml), labels made absolute."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{model}.tflite").symlink_to(fixtures / "tflite" / f"{model}.tflite")
    sidecar = (fixtures / "models" / f"{model}.yaml").read_text()
    sidecar = sidecar.replace("../imagenet_labels.txt", str((fixtures / "imagenet_labels.txt").resolve()))
    (folder / f"{model}.yaml").write_text(sidecar)
    return folder / f"{model}.tflite"


def teachable_machine_pair(folder: Path, *, batch_dynamic: bool = False) -> Path:
    """model.tflite + model.yaml + labels.txt as a Teachable Machine export has them: float32 NHWC input in
    [-1, 1], softmax output, labels.txt lines `0 Class 1`. Here the classes are the RGB channel means."""
    folder.mkdir(parents=True, exist_ok=True)
    model = make_channel_tflite(folder / "model.tflite", batch_dynamic=batch_dynamic)
    (folder / "labels.txt").write_text("0 Red thing\n1 Green thing\n2 Blue thing\n")
    (folder / "model.yaml").write_text(
        "input:\n  size: [32, 32]\n  color: rgb\n  layout: nhwc\n  dtype: float32\n"
        "  mean: [0.5, 0.5, 0.5]\n  std: [0.5, 0.5, 0.5]\nlabels: labels.txt\noutput: probabilities\n")
    return model


def colour_folder(folder: Path, n: int = 6) -> Path:
    """PNG photos of plain red, green and blue, in turn (BGR on disk as OpenCV writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    for i in range(n):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:] = colours[i % 3]
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return folder


# -- choosing the engine by content (no LiteRT needed) ------------------------------------------------

def test_the_engine_is_chosen_by_the_file_content_not_its_name(tmp_path, tiny_model, fixtures):
    onnx_named_tflite = tmp_path / "really_onnx.tflite"
    shutil.copy(tiny_model, onnx_named_tflite)
    assert detect(str(onnx_named_tflite)) == "onnxruntime"
    assert detect(str(fixtures / "tflite" / "mobilenet_v2_1.0_224_quant.tflite")) == "litert"
    tflite_named_onnx = tmp_path / "really_tflite.onnx"
    tflite_named_onnx.symlink_to(fixtures / "tflite" / "mobilenet_v1_0.25_128_quant.tflite")
    assert detect(str(tflite_named_onnx)) == "litert"
    assert set(REGISTRY) == {"onnxruntime", "litert"}
    text = tmp_path / "notes.tflite"
    text.write_text("these are my notes, not a model\n")
    with pytest.raises(ModelError, match="is not a TFLite model"):
        detect(str(text))


def test_litert_options_are_validated_like_any_config_key(tmp_path):
    from edge_runtime import config as config_mod
    from edge_runtime.util.errors import ConfigError

    config = tmp_path / "edge.yaml"
    config.write_text("litert:\n  xnnpak: false\n")
    with pytest.raises(ConfigError, match="litert.xnnpak"):
        config_mod.load(str(config), {}, {})
    config.write_text("litert:\n  xnnpack: maybe\n")
    with pytest.raises(ConfigError, match="litert.xnnpack"):
        config_mod.load(str(config), {}, {})
    config.write_text("litert:\n  xnnpack: false\n")
    assert config_mod.load(str(config), {}, {}).litert.xnnpack is False


@needs_litert
def test_without_xnnpack_the_builtin_kernels_give_the_same_answer(tmp_path):
    model = teachable_machine_pair(tmp_path / "tm")
    (tmp_path / "edge.yaml").write_text(f"model: {model}\nlitert:\n  xnnpack: false\n")
    photos = colour_folder(tmp_path / "photos", 3)
    result = run_daemon("--config", tmp_path / "edge.yaml", "--source", photos, "--log-level", "info")
    assert result.returncode == 0, result.stderr
    assert "litert (no XNNPACK)" in result.stderr
    assert [p["top"][0]["label"] for p in sorted(result.predictions, key=lambda p: p["path"])] == \
        ["Red thing", "Green thing", "Blue thing"]


# -- without ai-edge-litert ---------------------------------------------------------------------------

def test_without_litert_a_tflite_model_says_how_to_install_it(tmp_path, fixtures, tiny_model):
    env = no_litert_env(tmp_path)
    model = fixtures / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
    result = run_daemon("--source", "synthetic://64x64", "--model", model, "--max-frames", "1", env=env)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    errors = errors_of(result.stderr)
    assert len(errors) == 1 and str(model) in errors[0], result.stderr
    assert "LiteRT is not installed" in errors[0] and "./install.sh --litert" in errors[0]
    # The ONNX path never imports it: the same hidden package, an ONNX model, a normal run.
    ok = run_daemon("--source", "synthetic://64x64", "--model", tiny_model, "--max-frames", "3", env=env)
    assert ok.returncode == 0 and len(ok.predictions) == 3, ok.stderr


# -- the real Coral models, against their ONNX twins -------------------------------------------------

@needs_litert
@pytest.mark.parametrize("model", CORAL)
def test_coral_tflite_gives_the_onnx_twins_top1_on_every_robust_photo(model, fixtures, photo_folder, tmp_path):
    path = coral_with_sidecar(fixtures, model, tmp_path / "m")
    result = run_daemon("--source", photo_folder, "--model", path, "--top-k", "3", "--threads", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    by_photo = {p["path"].rsplit("/", 1)[-1]: p for p in result.predictions}
    assert set(by_photo) == set(EXPECTED[model])
    robust = {photo: x for photo, x in EXPECTED[model].items() if x["robust"]}
    assert len(robust) >= 5
    for photo, want in robust.items():
        top = by_photo[photo]["top"][0]
        assert (top["index"], top["label"]) == (want["top1"], want["label"]), photo
        assert top["score"] == pytest.approx(want["score"], abs=0.05), photo
    # The stats line names the engine.
    assert result.stats[-1]["model"]["engine"] == "litert"


@needs_litert
@pytest.mark.parametrize("model", CORAL)
def test_both_engines_agree_frame_by_frame_in_process(model, fixtures):
    """The same preprocessed photos through both engines: the same top-1 on the robust cases, scores close
    (the .tflite's uint8 output dequantised with its own scale and zero point, the ONNX twin's by the
    sidecar's probabilities rule)."""
    from edge_runtime.engines.postprocess import Postprocessor
    from edge_runtime.engines.preprocess import Preprocessor

    onnx = load_engine(str(fixtures / "models" / f"{model}.onnx"), 1)
    tflite = load_engine(str(fixtures / "tflite" / f"{model}.tflite"), 1, config_spec=None)
    assert (onnx.kind, tflite.kind) == ("onnxruntime", "litert")
    assert tflite.spec.origin.endswith("(the file itself)")        # no sidecar here: what the file says
    assert tflite.spec.input.dtype == "uint8" and tflite.spec.input.layout == "nhwc"
    pre, post = Preprocessor(onnx.spec.input), Postprocessor(onnx.spec, 1)
    tpost = Postprocessor(tflite.spec, 1)
    for photo, want in EXPECTED[model].items():
        if not want["robust"]:
            continue
        tensor = pre(cv2.imread(str(fixtures / "photos" / photo)))
        a, b = post.top(onnx.run(tensor))[0], tpost.top(tflite.run(tensor))[0]
        assert a["index"] == b["index"] == want["top1"], photo
        assert b["label"] == want["label"], photo          # ImageNet's 1000 labels after background
        assert abs(a["score"] - b["score"]) < 0.05, photo


@needs_litert
def test_a_float_description_of_a_quantised_input_is_quantised_with_the_files_scale(fixtures):
    """model_spec says float32 in [-1, 1]; the .tflite takes uint8 (scale 1/128, zero point 128): the
    engine quantises the tensor with the file's own parameters, and the answers stay those of raw pixels."""
    from edge_runtime.engines.preprocess import Preprocessor

    model = "mobilenet_v2_1.0_224_quant"
    path = str(fixtures / "tflite" / f"{model}.tflite")
    doc = {"input": {"size": [224, 224], "layout": "nhwc", "dtype": "float32", "mean": [0.5] * 3, "std": [0.5] * 3},
           "output": "probabilities"}
    floats = load_engine(path, 1, config_spec=doc, spec_origin="test")
    raw = load_engine(path, 1)
    assert floats.spec.input.dtype == "float32" and "uint8 input (scale 0.0078125, zero point 128)" in floats.describe()
    for photo, want in EXPECTED[model].items():
        if want["robust"]:
            img = cv2.imread(str(fixtures / "photos" / photo))
            top_f = int(np.argmax(floats.run(Preprocessor(floats.spec.input)(img))))
            top_r = int(np.argmax(raw.run(Preprocessor(raw.spec.input)(img))))
            assert top_f == top_r == want["top1"], photo


@needs_litert
def test_quantised_output_is_dequantised_with_its_own_scale_and_zero_point(fixtures):
    engine = load_engine(str(fixtures / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"), 1)
    out = engine.run(np.full(engine.input_shape(), 128, np.uint8))
    raw = engine.interpreter.get_tensor(engine.interpreter.get_output_details()[0]["index"])   # the uint8 itself
    assert raw.dtype == np.uint8 and out.dtype == np.float32 and out.shape == (1001,)
    assert np.array_equal(out, (raw.reshape(-1).astype(np.float32) - 0) * np.float32(1 / 256))
    assert 0 < out.max() <= 1 and raw.max() > 1
    assert "output dequantised (scale 0.00390625, zero point 0)" in engine.describe()


# -- a Teachable Machine-style export, made here -------------------------------------------------------

@needs_litert
@pytest.mark.parametrize("batch_dynamic", [False, True], ids=["batch 1", "resizable batch"])
def test_teachable_machine_style_pair_runs_and_names_classes_without_the_index(tmp_path, batch_dynamic):
    model = teachable_machine_pair(tmp_path / "tm", batch_dynamic=batch_dynamic)
    photos = colour_folder(tmp_path / "photos")
    # A folder is a throughput source: batched (4 frames a run when the batch resizes, else one at a time), 2 lanes.
    result = run_daemon("--source", photos, "--model", model, "--threads", "2", timeout=60)
    assert result.returncode == 0, result.stderr
    labels = [p["top"][0]["label"] for p in sorted(result.predictions, key=lambda p: p["path"])]
    assert labels == ["Red thing", "Green thing", "Blue thing"] * 2
    assert all(p["top"][0]["score"] > 0.9 for p in result.predictions)
    valid = run_daemon("--source", photos, "--model", model, "--validate-config")
    assert valid.returncode == 0 and "litert" in valid.stdout and "spec from" in valid.stdout, valid.stderr


@needs_litert
def test_metrics_and_validate_config_name_the_engine(tmp_path):
    import urllib.request

    from harness import free_port

    model = teachable_machine_pair(tmp_path / "tm")
    port = free_port()
    d = Daemon("--source", "synthetic://64x48?fps=30", "--model", model, "--http", f"127.0.0.1:{port}")
    try:
        wait_until(lambda: len(d.predictions()) >= 3, 30, "the first predictions")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        info = next(line for line in body.splitlines() if line.startswith("edge_runtime_model_info{"))
        assert 'engine="litert"' in info and 'labels="3"' in info and 'input="32x32"' in info, info
        assert d.stop() == 0
    finally:
        d.kill()
    valid = run_daemon("--source", "synthetic://64x48", "--model", model, "--validate-config")
    assert valid.returncode == 0 and "config OK" in valid.stdout and ", litert, 3 outputs" in valid.stdout


@needs_litert
def test_labels_embedded_in_the_file_are_used_without_a_sidecar(tmp_path):
    model = embed_labels(make_channel_tflite(tmp_path / "embedded.tflite"), ["red", "green", "blue"])
    engine = load_engine(str(model), 1)
    assert engine.spec.labels == ("red", "green", "blue") and engine.spec.origin.endswith("(the file itself)")
    tensor = np.zeros(engine.input_shape(), np.float32)
    tensor[..., 2] = 1.0                                         # the third input channel
    assert engine.spec.label(int(np.argmax(engine.run(tensor)))) == "blue"


@needs_litert
def test_every_lane_gets_its_own_interpreter(tmp_path):
    from edge_runtime.engines.lanes import lane_engines

    engine = load_engine(str(make_channel_tflite(tmp_path / "m.tflite")), 1)
    lanes = lane_engines(engine, 3)
    assert len({id(e) for e in lanes}) == 3 and not engine.shareable
    assert all(e.spec == engine.spec and e.num_outputs == 3 for e in lanes)


@needs_litert
def test_regions_run_through_a_tflite_model(tmp_path):
    model = teachable_machine_pair(tmp_path / "tm")
    photos = colour_folder(tmp_path / "photos", 3)
    result = run_daemon("--source", photos, "--model", model, "--region", "left=0,0,0.5,1",
                        "--region", "right=0.5,0,0.5,1", timeout=60)
    assert result.returncode == 0, result.stderr
    regions = {(p["path"].rsplit("/", 1)[-1], p.get("region")): p["top"][0]["label"] for p in result.predictions}
    assert regions[("00.png", "left")] == regions[("00.png", "right")] == "Red thing", regions


@needs_litert
def test_bench_compares_an_onnx_and_a_tflite_model_on_the_same_frames(tmp_path, video_file):
    import subprocess
    import sys

    onnx = make_channel_model(tmp_path / "a.onnx")
    tflite = teachable_machine_pair(tmp_path / "tm")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "--model", str(onnx), "--model", str(tflite),
                           "--video", str(video_file), "--threads", "1", "--seconds", "0.2", "--frames", "20",
                           "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=daemon_env())
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(next(out.glob("bench-*.json")).read_text())["compare"]["models"]
    assert [r["engine"] for r in rows] == ["onnxruntime", "litert"]
    assert rows[0]["bare_ratio_vs_first"] == 1.0 and rows[1]["daemon_ratio_vs_first"] > 0
    assert 0 <= rows[1]["top1_agreement_with_first"] <= 1
    assert "(litert) is " in proc.stdout or "(onnxruntime) is " in proc.stdout


# -- broken files ------------------------------------------------------------------------------------

def broken_tflites(tmp_path: Path, fixtures: Path, tiny_model: Path) -> dict:
    real = (fixtures / "tflite" / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(real[: len(real) // 3])
    text = tmp_path / "text.tflite"
    text.write_text("labels:\n  - cat\n  - dog\n")
    tiny = tmp_path / "tiny.tflite"
    tiny.write_bytes(real[:6])
    onnx = tmp_path / "onnx.tflite"
    shutil.copy(tiny_model, onnx)
    return {"truncated": (truncated, "LiteRT cannot load it"), "text": (text, "is not a TFLite model"),
            "six bytes": (tiny, "is not a TFLite model"), "onnx named .tflite": (onnx, None)}


@pytest.mark.parametrize("case", ["truncated", "text", "six bytes", "onnx named .tflite"])
def test_broken_tflite_files_are_one_line_and_exit_2(case, tmp_path, fixtures, tiny_model):
    path, problem = broken_tflites(tmp_path, fixtures, tiny_model)[case]
    if case == "truncated" and not litert_available():
        pytest.skip(LITERT_MISSING)
    result = run_daemon("--source", "synthetic://64x64", "--model", path, "--max-frames", "2")
    assert "Traceback" not in result.stderr
    if problem is None:           # chosen by content: an ONNX model runs, whatever its name
        assert result.returncode == 0 and len(result.predictions) == 2, result.stderr
        assert result.stats[-1]["model"]["engine"] == "onnxruntime"
        return
    assert result.returncode == 2 and result.stdout == ""
    errors = errors_of(result.stderr)
    assert len(errors) == 1 and str(path) in errors[0] and problem in errors[0], result.stderr


def test_train_refuses_a_tflite_backbone_in_one_line(tmp_path, fixtures):
    data = tmp_path / "data"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for photo in sorted((fixtures / "photos").iterdir())[:2]:
            shutil.copy(photo, data / name / photo.name)
    backbone = fixtures / "tflite" / "mobilenet_v2_1.0_224_quant.tflite"
    result = run_daemon("train", "--data", data, "--backbone", backbone, "--output", tmp_path / "out.onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a .tflite model; train takes an ONNX backbone" in lines[0], result.stderr
    assert not (tmp_path / "out.onnx").exists()


# -- reload across engines ------------------------------------------------------------------------------

@needs_litert
@pytest.mark.slow
def test_reload_onnx_to_tflite_and_back_keeps_frames_contiguous(tmp_path):
    make_channel_model(tmp_path / "a.onnx")                      # labels: red, green, blue
    teachable_machine_pair(tmp_path)                              # model.tflite: Red thing, ...
    config = tmp_path / "edge.yaml"
    config.write_text("model: a.onnx\nstats_interval: 0.5\n")
    d = Daemon("--config", config, "--source", "synthetic://160x120?fps=30")
    try:
        wait_until(lambda: len(d.predictions()) >= 10, 30, "the first predictions")
        for model, labels in (("model.tflite", {"Red thing", "Green thing", "Blue thing"}),
                              ("a.onnx", {"red", "green", "blue"})):
            before = d.stderr().count("reload: now classifying")
            config.write_text(f"model: {model}\nstats_interval: 0.5\n")
            d.proc.send_signal(signal.SIGHUP)
            wait_until(lambda n=before: d.stderr().count("reload: now classifying") > n, 30, f"the reload to {model}")
            wait_until(lambda want=labels: {p["top"][0]["label"] for p in d.predictions()[-5:]} <= want, 10,
                       f"{model}'s labels")
            time.sleep(0.5)
        assert d.stop() == 0
    finally:
        d.kill()
    frames = [p["frame"] for p in d.predictions()]
    final = d.final_stats()
    assert frames == list(range(len(frames))) and final["frames_dropped"] == 0, json.dumps([final, frames])
    assert final["reloads"] == 2 and final["reload_failures"] == 0 and final["source_reconnects"] == 0
    engines = [s["model"]["engine"] for s in d.lines() if s.get("type") == "stats"]
    assert "litert" in engines and engines[-1] == "onnxruntime"
    assert "Traceback" not in d.stderr()
