"""models/quantize.py on a real float ImageNet model (sidecar only) and on our own export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]   # its fixtures

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.engines.ort import Engine  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402

from models import quantize  # noqa: E402

FLOAT_MODEL = "mobilenet_v2_1.0_224_float"


@pytest.fixture(scope="module")
def int8(fixtures, tmp_path_factory):
    """The shared float MobileNetV2 quantised on the shared photos; (path, report, stdout)."""
    from models.common import run_main

    out = tmp_path_factory.mktemp("int8")
    model = fixtures / "models" / f"{FLOAT_MODEL}.onnx"
    argv = ["--model", model, "--calibration-dir", fixtures / "photos", "--eval-dir", fixtures / "photos",
            "--output", out / "v2_int8.onnx", "--json", out / "report.json", "--latency-runs", "10"]
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = run_main(quantize.main, "quantize.py", [str(a) for a in argv])
    assert rc == 0, stdout.getvalue()
    return out / "v2_int8.onnx", json.loads((out / "report.json").read_text()), stdout.getvalue()


def test_int8_agrees_with_fp32_on_real_photos(int8, fixtures):
    path, report, stdout = int8
    expected = json.loads((fixtures / "expected.json").read_text())["models"][FLOAT_MODEL]
    line = next(line for line in stdout.splitlines() if "top-1 agreement" in line)
    agree, total = map(int, re.search(r"(\d+)/(\d+) \(", line).groups())
    assert total == len(expected) == report["eval_images"]
    assert agree / total >= 0.8, line
    # Every photo on which the float model is confident (margin >= 0.1) keeps its top-1.
    disagreeing = {d["image"].rsplit("/", 1)[-1] for d in report["disagreements"]}
    robust = {name for name, case in expected.items() if case["robust"]}
    assert not disagreeing & robust, disagreeing & robust
    assert report["int8_mb"] < 0.35 * report["fp32_mb"]
    assert re.search(r"latency \(batch 1, \w+ onnxruntime threads, median of 10\): "
                     r"FP32 [\d.]+ ms, INT8 [\d.]+ ms", stdout)


def test_int8_is_per_channel_qdq(int8):
    model = onnx.load(str(int8[0]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    inits = {t.name: t for t in model.graph.initializer}
    weight_scales = [inits[n.input[1]] for n in model.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weight_scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales)


def test_int8_carries_the_sidecar_description(int8, fixtures, tmp_path, onnx_metadata):
    """Alone in a folder (no YAML), the INT8 file describes itself and predicts the expected classes."""
    lonely = tmp_path / "v2_int8.onnx"
    shutil.copy(int8[0], lonely)
    sidecar = ms.load_sidecar(fixtures / "models" / f"{FLOAT_MODEL}.yaml")
    spec = ms.resolve(str(lonely), onnx_metadata(lonely), None)
    assert spec.origin.endswith("(metadata)")
    assert spec.to_document() == sidecar.to_document()          # input, labels (inline), offset, output
    info = spec.info_dict
    assert "per-channel" in info["quantization"] and "18 images" in info["quantization"]
    assert info["source_model"].startswith(f"{FLOAT_MODEL}.onnx") and info["quantizer"].startswith("edge_runtime")

    # Run as the daemon runs it (its session options: exact INT8 arithmetic on any x86 CPU).
    expected = json.loads((fixtures / "expected.json").read_text())["models"][FLOAT_MODEL]
    engine = Engine(str(lonely), 1)
    prep = Preprocessor(engine.spec.input)
    for name, case in expected.items():
        if case["robust"]:
            logits = engine.run(prep(cv2.imread(str(fixtures / "photos" / name))))
            assert engine.spec.label(int(logits.argmax())) == case["label"], name


def test_quantizes_our_own_export(tmp_path, run_model_tool, onnx_metadata, fixtures):
    """Plumbing with a random network: an opset-11 export becomes an opset-13 INT8 file with our metadata."""
    pytest.importorskip("torch")
    from models import export

    fp32, int8 = tmp_path / "small.onnx", tmp_path / "small_int8.onnx"
    assert run_model_tool(export.main, ["--weights", "random", "--opset", 11, "--input-size", 96, 96,
                                  "--output", fp32])[0] == 0
    rc, out, err = run_model_tool(quantize.main, ["--model", fp32, "--calibration-dir", fixtures / "photos",
                                            "--max-calibration", 6, "--output", int8])
    assert rc == 0, err
    assert "converting to opset 13" in err and "calibration images" in out
    source, result = ms.from_metadata(onnx_metadata(fp32), str(fp32)), ms.from_metadata(onnx_metadata(int8), str(int8))
    assert result.to_document() == source.to_document()
    assert result.untrained and result.info_dict["arch"] == "mobilenet_v3_small"
    assert result.info_dict["opset"] == "13" and "6 images" in result.info_dict["quantization"]
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((2, 3, 96, 96), np.float32)})[0].shape == (2, 1000)


@pytest.mark.parametrize("case, message", [
    ("missing", "missing.onnx: file not found"),
    ("broken", "broken.onnx: not a readable ONNX file"),
    ("quantised", "already quantised"),
    ("no_images", "--calibration-dir"),
    ("wrong_sidecar", "does not match its description"),
])
def test_bad_input_is_one_line_and_exit_2(case, message, fixtures, tmp_path, run_model_tool):
    model = fixtures / "models" / f"{FLOAT_MODEL}.onnx"
    calibration = fixtures / "photos"
    if case == "missing":
        model = tmp_path / "missing.onnx"
    elif case == "broken":
        model = tmp_path / "broken.onnx"
        model.write_bytes(b"\x08\x07 this is not protobuf" * 10)
    elif case == "quantised":
        model = fixtures / "models" / "mobilenet_v2_1.0_224_quant.onnx"
    elif case == "no_images":
        calibration = tmp_path / "empty"
        calibration.mkdir()
    elif case == "wrong_sidecar":
        shutil.copy(model, tmp_path / "m.onnx")
        (tmp_path / "m.yaml").write_text("input: {size: [192, 192], layout: nhwc, dtype: float32}\n")
        model = tmp_path / "m.onnx"
    rc, out, err = run_model_tool(quantize.main, ["--model", model, "--calibration-dir", calibration,
                                            "--output", tmp_path / "out.onnx"])
    assert rc == 2, (out, err)
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.onnx").exists()


def test_command_line_usage_errors(tmp_path, repo_root):
    """As a user sees it: exit 2, one line naming the file (with torch unimportable: the tool does not need it)."""
    missing = tmp_path / "nope.onnx"
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path('models/quantize.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "quantize.py", "--model", str(missing),
                           "--calibration-dir", str(tmp_path), "--output", str(tmp_path / "o.onnx")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"quantize.py: error: model {missing}: file not found"
    proc = subprocess.run([sys.executable, "models/quantize.py", "--model"], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "expected one argument" in proc.stderr
