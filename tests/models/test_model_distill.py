"""models/distill.py end to end on a tiny generated image folder, on the CPU."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]   # its fixtures

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402

from models import distill  # noqa: E402
from models.training import kd_loss, split_samples  # noqa: E402

CLASSES = ("blue_triangle", "green_square", "red_circle")
SMALL_RUN = ["--init", "random", "--input-size", 64, "--batch-size", 16, "--workers", 0, "--threads", 1,
             "--no-progress"]


def make_shapes(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """64x64 images of one filled shape in a class colour, on noisy light backgrounds."""
    rng = np.random.default_rng(seed)
    colours = {"red_circle": (0, 0, 220), "green_square": (0, 200, 0), "blue_triangle": (220, 60, 0)}
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((64, 64, 3), rng.integers(150, 256, 3), np.uint8)
            img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
            c = tuple(int(np.clip(v + rng.integers(-30, 31), 0, 255)) for v in colours[name])
            x, y, r = (int(v) for v in (rng.integers(20, 44), rng.integers(20, 44), rng.integers(10, 18)))
            if name == "red_circle":
                cv2.circle(img, (x, y), r, c, -1)
            elif name == "green_square":
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), c, -1)
            else:
                cv2.fillPoly(img, [np.array([[x, y - r], [x - r, y + r], [x + r, y + r]], np.int32)], c)
            cv2.imwrite(str(root / name / f"{i:03d}.png"), img)
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """Teacher fine-tuned first, then the student distilled from it; (output path, stdout)."""
    import contextlib
    import io

    from models.common import run_main

    out = tmp_path_factory.mktemp("distill") / "shapes.onnx"
    stdout = io.StringIO()
    argv = ["--data", shapes, "--output", out, "--epochs", 10, "--teacher-epochs", 6] + SMALL_RUN
    with contextlib.redirect_stdout(stdout):
        rc = run_main(distill.main, "distill.py", [str(a) for a in argv])
    assert rc == 0, stdout.getvalue()
    return out, stdout.getvalue()


def test_student_beats_chance_clearly_through_the_exported_file(trained):
    out, stdout = trained
    assert "72 training, 18 validation images" in stdout
    assert re.search(r"^teacher epoch 6/6", stdout, re.M) and re.search(r"^student epoch 10/10", stdout, re.M)
    final = next(line for line in stdout.splitlines() if line.startswith("exported"))
    onnx_acc = float(re.search(r"onnxruntime ([0-9.]+) \(", final).group(1))
    best = float(re.search(r"^student: best val acc ([0-9.]+)", stdout, re.M).group(1))
    assert onnx_acc >= 0.65, stdout                # at least 12 of 18; chance is 0.333
    assert onnx_acc == pytest.approx(best, abs=0.06)   # the file does what the PyTorch model did


def test_export_names_the_classes_and_runs(trained, shapes, onnx_metadata):
    out, _ = trained
    spec = ms.resolve(str(out), onnx_metadata(out), None)
    assert spec.labels == CLASSES and spec.origin.endswith("(metadata)")
    assert spec.input.size == (64, 64) and spec.input.resize == 73
    assert not spec.untrained and "distilled from mobilenet_v3_large" in spec.info_dict["weights"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    prep = Preprocessor(spec.input)
    images = sorted(shapes.glob("*/*.png"))[::10]
    hits = 0
    for path in images:
        logits = session.run(None, {"input": prep(cv2.imread(str(path)))})[0]
        assert logits.shape == (1, 3)
        hits += spec.label(int(logits.argmax())) == path.parent.name
    assert hits / len(images) >= 0.65
    assert out.with_suffix(".pth").exists() and out.with_suffix(".teacher.pth").exists()


def test_checkpoint_reexports_with_its_classes_and_size(trained, tmp_path, run_model_tool, onnx_metadata):
    from models import export

    out, _ = trained
    again = tmp_path / "opset11.onnx"
    rc, _, err = run_model_tool(export.main, ["--weights", out.with_suffix(".pth"), "--opset", 11,
                                              "--output", again])
    assert rc == 0, err
    spec = ms.from_metadata(onnx_metadata(again), str(again))
    assert spec.labels == CLASSES and spec.input.size == (64, 64) and spec.info_dict["opset"] == "11"


def test_distills_from_a_saved_teacher(trained, shapes, tmp_path, run_model_tool):
    out, _ = trained
    teacher = out.with_suffix(".teacher.pth")
    saved = torch.load(teacher, weights_only=True)
    rc, stdout, err = run_model_tool(distill.main, ["--data", shapes, "--output", tmp_path / "again.onnx",
                                              "--teacher", teacher, "--epochs", 2, "--alpha", 0.3,
                                              "--temperature", 4] + SMALL_RUN)
    assert rc == 0, err
    # Same split, same weights, same BatchNorm statistics: the loaded teacher scores what it scored.
    assert f"teacher {teacher}: val acc {saved['val_acc']:.3f}" in stdout
    assert "teacher epoch" not in stdout and "student epoch 2/2" in stdout
    assert (tmp_path / "again.onnx").exists()


def test_kd_loss_is_the_documented_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, alpha=1.0, temperature=2.0), ce)
    assert float(kd_loss(s, s, y, alpha=0.0, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    T, alpha = 2.0, 0.25
    p_t, log_p_s = torch.softmax(t / T, 1), torch.log_softmax(s / T, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, y, alpha, T), alpha * ce + (1 - alpha) * T * T * kl, atol=1e-6)


def test_split_is_stratified_and_seeded(tmp_path):
    samples = [(tmp_path / f"{c}_{i}.png", c) for c in range(3) for i in range(10 + 5 * c)]
    train, val = split_samples(samples, 0.2, seed=1)
    assert sorted(train + val) == sorted(samples) and not set(train) & set(val)
    assert [sum(1 for _, c in val if c == k) for k in range(3)] == [2, 3, 4]
    assert split_samples(samples, 0.2, seed=1) == (train, val) != split_samples(samples, 0.2, seed=2)


@pytest.mark.parametrize("layout, message", [
    ("missing", "folder not found"),
    ("one_class", "at least 2"),
    ("empty_class", "no images: b"),
])
def test_bad_data_folder(layout, message, tmp_path, run_model_tool):
    data = tmp_path / "data"
    if layout != "missing":
        make_shapes(data, per_class=2)
        if layout == "one_class":
            for d in ("green_square", "red_circle"):
                for f in (data / d).iterdir():
                    f.unlink()
                (data / d).rmdir()
        else:
            (data / "b").mkdir()
    rc, _, err = run_model_tool(distill.main, ["--data", data, "--output", tmp_path / "m.onnx"] + SMALL_RUN)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_hyperparameters_exit_2(tmp_path, run_model_tool):
    with pytest.raises(SystemExit) as exc:
        distill.parse_args(["--data", str(tmp_path), "--output", "m.onnx", "--alpha", "1.5"])
    assert exc.value.code == 2
    assert math.isclose(distill.parse_args(["--data", "d", "--output", "m.onnx"]).temperature, 2.0)


def test_imagenet_init_keeps_the_features_and_replaces_the_classifier(monkeypatch):
    from models import checkpoint, mobilenetv3

    source = mobilenetv3.build("small")
    monkeypatch.setattr(checkpoint, "imagenet_state_dict", lambda arch: source.state_dict())
    model = distill.new_network("mobilenet_v3_small", 3, "imagenet")
    assert model.classifier[3].out_features == 3
    assert torch.equal(model.features[4].block[1][0].weight, source.features[4].block[1][0].weight)
    assert torch.equal(model.classifier[0].weight, source.classifier[0].weight)
