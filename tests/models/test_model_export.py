"""models/export.py: parity with PyTorch at opset 17 and 11, metadata the daemon reads, fused input."""

from __future__ import annotations

import re
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]   # its fixtures

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402

from models import export, exporting  # noqa: E402
from models.common import CheckFailed  # noqa: E402
from models.mobilenetv3 import build  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_like):
    """A small network with trained-looking weights, as a .pth state dict, and the network itself."""
    torch.manual_seed(0)
    model = build("small").eval()
    trained_like(model, seed=3)
    path = tmp_path_factory.mktemp("weights") / "small.pth"
    torch.save(model.state_dict(), path)
    return path, model


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("opset", [17, 11])
def test_export_matches_pytorch_and_describes_itself(opset, trained, tmp_path, run_model_tool, onnx_metadata):
    weights, model = trained
    out_path = tmp_path / f"small_{opset}.onnx"
    rc, out, err = run_model_tool(export.main, ["--arch", "small", "--weights", weights, "--opset", opset,
                                          "--output", out_path])
    assert rc == 0, err
    # The tool's own report: checker ok, both batch sizes within 1e-4.
    line = next(line for line in out.splitlines() if "onnxruntime vs PyTorch" in line)
    diffs = [float(d) for d in re.findall(r"([0-9.]+e[+-]\d+) \(outputs", line)]
    assert len(diffs) == 2 and max(diffs) <= 1e-4, line
    assert "batch 1" in line and "batch 4" in line and "onnx.checker: ok" in out
    assert re.search(r"params 2\.5\d M, MACs 5\d\.\d M at 224x224, file \d+\.\d+ MB", out)

    # Our own check, independent of the tool's: any batch size, same numbers as PyTorch.
    proto = onnx.load(str(out_path))
    assert proto.opset_import[0].version == opset
    ops = {n.op_type for n in proto.graph.node}
    assert ("HardSwish" in ops) == (opset >= 14)
    x = np.random.default_rng(5).standard_normal((3, 3, 224, 224)).astype(np.float32)
    got = ort_run(out_path, x)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    # What the daemon reads, with no sidecar anywhere.
    assert not ms.sidecar_path(out_path).exists()
    spec = ms.resolve(str(out_path), onnx_metadata(out_path), None)
    assert spec.origin.endswith("(metadata)")
    assert spec.input == ms.InputSpec(size=(224, 224), resize=256, color="rgb", layout="nchw", dtype="float32",
                                      mean=ms.IMAGENET_MEAN, std=ms.IMAGENET_STD, interpolation="linear")
    assert len(spec.labels) == 1000 and spec.labels[0] == "tench" and spec.label(1) == "goldfish"
    info = spec.info_dict
    assert info["arch"] == "mobilenet_v3_small" and info["opset"] == str(opset)
    assert info["exporter"].startswith("edge_runtime models/export.py ")
    assert str(weights.resolve()) in info["weights"] and not spec.untrained


def test_default_runtime_model_from_the_command_line(tmp_path, repo_root, onnx_metadata):
    """The README's command, as a user runs it: a random model the runtime runs with no sidecar."""
    out_path = tmp_path / "mobilenetv3_small.onnx"
    proc = subprocess.run([sys.executable, "models/export.py", "--arch", "small", "--weights", "random",
                           "--output", str(out_path)], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: untrained weights" in proc.stdout
    spec = ms.resolve(str(out_path), onnx_metadata(out_path), None)
    assert spec.untrained and spec.info_dict["weights"] == "untrained (random init, seed 0)"
    assert spec.input == ms.default_spec().input and spec.labels == ms.default_spec().labels
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 224, 224]
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    logits = session.run(None, {"input": Preprocessor(spec.input)(frame)})[0]
    assert logits.shape == (1, 1000) and np.isfinite(logits).all()
    # ... and the daemon runs it with nothing else: no sidecar, no config.
    daemon = subprocess.run([sys.executable, "-m", "edge_runtime", "--source", "synthetic://640x480", "--model",
                             str(out_path), "--max-frames", "5"], cwd=repo_root, capture_output=True, text=True,
                            timeout=120)
    assert daemon.returncode == 0, daemon.stderr
    lines = [json.loads(line) for line in daemon.stdout.splitlines()]
    predictions = [x for x in lines if x["type"] == "prediction"]
    assert len(predictions) == 5 and lines[-1]["type"] == "stats"
    assert all(t["label"] == spec.labels[t["index"]] for p in predictions for t in p["top"])
    assert "(metadata)" in daemon.stderr and "UNTRAINED" in daemon.stderr


def test_fused_preprocessing_takes_pixels_and_agrees(trained, tmp_path, run_model_tool, onnx_metadata, fixtures):
    weights, _ = trained
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    common = ["--arch", "small", "--weights", weights, "--input-size", 160, 192]
    assert run_model_tool(export.main, common + ["--output", plain])[0] == 0
    rc, _, err = run_model_tool(export.main, common + ["--fuse-preprocess", "--output", fused])
    assert rc == 0, err

    plain_spec = ms.resolve(str(plain), onnx_metadata(plain), None)
    fused_spec = ms.resolve(str(fused), onnx_metadata(fused), None)
    assert plain_spec.input.size == fused_spec.input.size == (160, 192)
    assert plain_spec.input.resize == fused_spec.input.resize == 183          # round(160 * 256 / 224)
    assert (fused_spec.input.layout, fused_spec.input.dtype, fused_spec.input.color) == ("nhwc", "uint8", "rgb")
    assert "mean [0.485, 0.456, 0.406]" in fused_spec.info_dict["input_fused"]
    session = ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert session.get_inputs()[0].shape == ["batch", 160, 192, 3]

    # The same photos through each model's own runtime preprocessing give the same logits.
    photos = sorted((fixtures / "photos").iterdir())[:3]
    import cv2

    frames = [cv2.imread(str(p)) for p in photos]
    a = np.concatenate([ort_run(plain, Preprocessor(plain_spec.input)(f)) for f in frames])
    b = ort_run(fused, np.concatenate([Preprocessor(fused_spec.input)(f) for f in frames]))   # batch 3
    assert np.abs(a).max() > 0.5
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_labels_and_class_count(tmp_path, run_model_tool, onnx_metadata):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out_path = tmp_path / "three.onnx"
    rc, _, err = run_model_tool(export.main, ["--weights", "random", "--num-classes", 3, "--labels", labels,
                                        "--input-size", 96, 96, "--output", out_path])
    assert rc == 0, err
    spec = ms.from_metadata(onnx_metadata(out_path), str(out_path))
    assert spec.labels == ("cat", "dog", "bird")
    assert ort_run(out_path, np.zeros((2, 3, 96, 96), np.float32)).shape == (2, 3)

    rc, _, err = run_model_tool(export.main, ["--weights", "random", "--num-classes", 4, "--labels", labels,
                                        "--output", tmp_path / "four.onnx"])
    assert rc == 2 and "has 3 names but the model has 4 classes" in err
    assert not (tmp_path / "four.onnx").exists()


@pytest.mark.parametrize("argv, message", [
    (["--weights", "{tmp}/missing.pth"], "missing.pth: file not found"),
    (["--weights", "{tmp}/garbage.pth"], "garbage.pth: not a loadable PyTorch state dict"),
    (["--weights", "{tmp}/small.pth", "--arch", "large"], "do not fit this architecture"),
    (["--weights", "random", "--opset", "9"], "--opset 9 is not supported"),
    (["--weights", "random", "--input-size", "16", "16"], "too small"),
    (["--weights", "imagenet", "--num-classes", "10"], "1000-class"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, run_model_tool, trained):
    (tmp_path / "garbage.pth").write_bytes(b"not a pickle")
    (tmp_path / "small.pth").write_bytes(trained[0].read_bytes())
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--output", str(tmp_path / "m.onnx")]
    rc, out, err = run_model_tool(export.main, argv)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_parity_check_fails_when_the_file_is_not_the_model(trained, tmp_path):
    weights, model = trained
    spec = exporting.make_spec((64, 64))
    path = tmp_path / "m.onnx"
    exporting.export_onnx(model, spec, path, info={"arch": "mobilenet_v3_small"})
    assert max(p.max_abs_diff for p in exporting.verify_onnx(path, model, spec).values()) <= 1e-4
    other = build("small").eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.classifier[3].bias += 1e-3          # a small, real difference
    with pytest.raises(CheckFailed, match="disagree"):
        exporting.verify_onnx(path, other, spec)


def test_imagenet_weights_path_without_downloading(monkeypatch, tmp_path, run_model_tool, onnx_metadata, trained_like):
    """--weights imagenet loads what torch.hub returns (stubbed here: tests never download)."""
    reference = build("large").eval()
    trained_like(reference, seed=4)
    requested = []
    monkeypatch.setattr(export, "imagenet_state_dict",
                        lambda arch: requested.append(arch) or reference.state_dict())
    out_path = tmp_path / "large.onnx"
    rc, out, err = run_model_tool(export.main, ["--arch", "large", "--weights", "imagenet", "--output", out_path])
    assert rc == 0, err
    assert requested == ["mobilenet_v3_large"] and "warning" not in out
    spec = ms.from_metadata(onnx_metadata(out_path), str(out_path))
    assert spec.info_dict["weights"] == "imagenet (torchvision IMAGENET1K_V1)" and not spec.untrained
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(ort_run(out_path, x), reference(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)
