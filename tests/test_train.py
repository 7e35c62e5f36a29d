"""`python -m edge_runtime train` on generated scenes from the real fixture photos, with the fixture's float
MobileNetV2 as the backbone; the taught model is then run by the real daemon, with no sidecar, on pictures
it was not trained on. Every refusal is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edge_runtime.teach import train as teach
from harness import FIXTURES, REPO, daemon_env, run_daemon

PHOTOS = FIXTURES / "photos"
BACKBONE = FIXTURES / "models" / "mobilenet_v2_1.0_224_float.onnx"
pytestmark = pytest.mark.skipif(not BACKBONE.exists(), reason="fixtures not available")


def photo(name: str) -> np.ndarray:
    image = cv2.imread(str(PHOTOS / name))
    assert image is not None, name
    return image


def variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (60-95 % of each side), rescale and brightness/contrast change of `image`."""
    h, w = image.shape[:2]
    s = rng.uniform(0.6, 0.95)
    ch, cw = int(h * s), int(w * s)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = cv2.resize(image[y:y + ch, x:x + cw], None, fx=rng.uniform(0.7, 1.3), fy=rng.uniform(0.7, 1.3))
    return np.clip(crop * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25), 0, 255).astype(np.uint8)


def bin_scene(full: bool, rng: np.random.Generator) -> np.ndarray:
    """The coffee photo as the fixed scene; 'full' has the potato-chip bag in its left region. Lighting
    (gain, offset, gamma) and a few pixels of camera jitter change every picture."""
    scene = cv2.resize(photo("coffee.png"), (320, 240))
    if full:
        obj = cv2.resize(photo("missvickie_potato_chips.png"), (90, 90))
        y, x = 70 + rng.integers(-8, 9), 30 + rng.integers(-8, 9)
        scene[y:y + 90, x:x + 90] = obj
    dy, dx = rng.integers(-6, 7, size=2)
    scene = cv2.warpAffine(scene, np.float32([[1, 0, dx], [0, 1, dy]]), (320, 240), borderMode=cv2.BORDER_REFLECT)
    gamma = rng.uniform(0.7, 1.4)
    scene = 255.0 * (scene / 255.0) ** gamma * rng.uniform(0.6, 1.2) + rng.uniform(-20, 20)
    return np.clip(scene, 0, 255).astype(np.uint8)


def write(folder: Path, name: str, image: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / name), image)


def train_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", "train", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=daemon_env(), cwd=REPO)


def daemon_accuracy(model: Path, folder: Path, truth: dict[str, str]) -> float:
    """Run the real daemon on `folder` with `model` alone (no sidecar) and score its top-1 labels."""
    assert not model.with_suffix(".yaml").exists()
    result = run_daemon("--source", folder, "--model", model, "--threads", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    got = {p["path"].rsplit("/", 1)[-1]: p["top"][0]["label"] for p in result.predictions}
    assert set(got) == set(truth)
    return sum(got[name] == label for name, label in truth.items()) / len(truth)


def test_state_task_from_five_pictures_a_label(tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    for i in range(5):
        write(data / "empty", f"e{i}.jpg", bin_scene(False, rng))
        write(data / "full", f"f{i}.jpg", bin_scene(True, rng))
    write(data / "unlabeled", "u.jpg", bin_scene(True, rng))      # not a class
    out = tmp_path / "bin.onnx"
    proc = train_cli("--data", data, "--backbone", BACKBONE, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "head:" in proc.stdout and "accuracy" in proc.stdout
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    report = json.loads(props[teach.METADATA_REPORT_KEY])
    assert report["labels"] == ["empty", "full"] and report["images"] == {"empty": 5, "full": 5}
    assert report["method"] in ("softmax", "imprinting") and len(report["confusion"]) == 2
    assert json.loads(props["edge_runtime.spec"])["labels"] == ["empty", "full"]
    # Batch axis as the backbone has it (fixed 1 for this TF-converted model).
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1

    test = tmp_path / "test"
    truth = {}
    for i in range(20):
        for label, full in (("empty", False), ("full", True)):
            write(test, f"{label}_{i}.jpg", bin_scene(full, rng))
            truth[f"{label}_{i}.jpg"] = label
    assert daemon_accuracy(out, test, truth) >= 0.97


ANIMALS_TRAIN = {"cat": ["cat.png", "chelsea.png"], "dog": ["dog_segmentation.png", "pets.jpg"],
                 "bird": ["bird.png", "owl.jpg"], "dragonfly": ["dragonfly.png"]}
# Other photos of the same kinds; the dragonfly has one photo, so its test pictures are other variants.
ANIMALS_TEST = {"cat": ["imprinting_cat_train_0.png"], "dog": ["imprinting_dog_train_0.png"],
                "bird": ["bird_segmentation.png", "parrot.jpg"], "dragonfly": ["dragonfly.png"]}


def test_four_kinds_of_animal_from_twenty_photos_each(tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "data"
    for label, names in ANIMALS_TRAIN.items():
        for i in range(20):
            write(data / label, f"{i}.jpg", variant(photo(names[i % len(names)]), rng))
    out = tmp_path / "animals.onnx"
    report = teach.train(data, str(BACKBONE), out)
    assert report.labels == ("bird", "cat", "dog", "dragonfly")
    assert out.exists()

    test_rng = np.random.default_rng(12345)      # another stream: distinct variants
    test = tmp_path / "test"
    truth = {}
    for label, names in ANIMALS_TEST.items():
        for i in range(10):
            name = f"{label}_{i}.jpg"
            write(test, name, variant(photo(names[i % len(names)]), test_rng))
            truth[name] = label
    assert daemon_accuracy(out, test, truth) >= 0.80


def _refused(tmp_path, data: Path, *extra, backbone=BACKBONE) -> str:
    out = tmp_path / "out" / "taught.onnx"
    out.parent.mkdir(exist_ok=True)
    proc = train_cli("--data", data, "--backbone", backbone, "--output", out, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert list(out.parent.iterdir()) == [], "nothing written, no temp file left"
    return lines[0]


@pytest.fixture
def two_labels(tmp_path):
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    for label, name in (("cat", "cat.png"), ("bird", "bird.png")):
        for i in range(3):
            write(data / label, f"{i}.jpg", variant(photo(name), rng))
    return data


def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path, two_labels):
    one = tmp_path / "one"
    write(one / "cat", "a.jpg", photo("cat.png"))
    write(one / "cat", "b.jpg", photo("chelsea.png"))
    assert "at least 2 labels" in _refused(tmp_path, one)

    (two_labels / "bird" / "0.jpg").unlink()
    (two_labels / "bird" / "1.jpg").unlink()
    line = _refused(tmp_path, two_labels)
    assert "bird (1)" in line and "at least 2" in line and "recommended" in line

    write(two_labels / "bird", "1.jpg", photo("bird.png"))
    (two_labels / "cat" / "bad.jpg").write_bytes(b"not a jpeg at all")
    assert "cannot decode image" in _refused(tmp_path, two_labels) and "bad.jpg" in _refused(tmp_path, two_labels)
    (two_labels / "cat" / "bad.jpg").unlink()

    (two_labels / "bad label!").mkdir()
    assert "not a label name" in _refused(tmp_path, two_labels)
    (two_labels / "bad label!").rmdir()

    assert "no tensor 'nope'" in _refused(tmp_path, two_labels, "--features", "nope")
    quant = FIXTURES / "models" / "mobilenet_v2_1.0_224_quant.onnx"
    assert "quantised" in _refused(tmp_path, two_labels, backbone=quant)


def test_untrained_backbone_is_refused(tmp_path, two_labels):
    untrained = tmp_path / "v3_untrained.onnx"
    made = subprocess.run([sys.executable, "-m", "edge_runtime", "fetch-model", "small", "--untrained",
                           "--output", untrained], capture_output=True, text=True, timeout=300,
                          env=daemon_env(), cwd=REPO)
    assert made.returncode == 0, made.stderr
    assert "untrained" in _refused(tmp_path, two_labels, backbone=untrained)


def test_features_are_found_in_a_mobilenetv3_graph(tmp_path):
    """Plumbing on fetch-model's untrained V3-Small (trained weights need the internet): the automatic cut is
    the 1024-d pre-classifier vector, the pooled 576-d one is reachable by name."""
    from edge_runtime.teach import features as feat
    untrained = tmp_path / "v3.onnx"
    made = subprocess.run([sys.executable, "-m", "edge_runtime", "fetch-model", "small", "--untrained",
                           "--output", untrained], capture_output=True, text=True, timeout=300,
                          env=daemon_env(), cwd=REPO)
    assert made.returncode == 0, made.stderr
    import onnxruntime as ort
    model = onnx.load(str(untrained))
    x = np.zeros((2, 3, 224, 224), np.float32)
    pooled = [n.output[0] for n in model.graph.node if n.op_type == "GlobalAveragePool"][-1]   # SE blocks pool too
    for tensor, dim in ((feat.find_features(model, "v3"), 1024), (pooled, 576)):
        cut = feat.cut(model, tensor, "v3")
        sess = ort.InferenceSession(cut.SerializeToString(), providers=["CPUExecutionProvider"])
        assert sess.run(None, {"input": x})[0].shape == (2, dim)


def test_softmax_head_fitted_in_the_pictures_span_is_the_same_head():
    """The d > n shortcut (fit in the span of the pictures) must give the full fit's answer."""
    from edge_runtime.teach import head
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.normal(size=(24, 300)) + rng.normal(size=(3, 300))[y]
    fast, full = head.fit_softmax(x, y, 3), head.fit_softmax(x, y, 3, in_span=False)
    probe = rng.normal(size=(50, 300)) + rng.normal(size=(3, 300))[rng.integers(0, 3, 50)]
    np.testing.assert_allclose(fast.logits(probe), full.logits(probe), rtol=1e-6, atol=1e-6)
    assert (fast.predict(x) == y).all()


def test_train_imports_no_torch(tmp_path, two_labels):
    out = tmp_path / "t.onnx"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge_runtime", "train", "--data", two_labels,
                           "--backbone", BACKBONE, "--output", out], capture_output=True, text=True, timeout=300,
                          env=daemon_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported and "torch" not in imported and "sklearn" not in imported


def test_library_call_reports_progress_and_stops_when_cancelled(tmp_path, two_labels):
    """What the page's Train button will call: progress per picture, cancel/deadline, nothing written."""
    seen = []
    out = tmp_path / "lib.onnx"
    report = teach.train(two_labels, str(BACKBONE), out, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]
    assert report.images == {"bird": 3, "cat": 3} and report.folds == 3 and out.exists()
    assert sum(map(sum, report.confusion)) == 6 and 0 <= report.accuracy <= 1

    stopped = tmp_path / "stopped.onnx"
    with pytest.raises(teach.Cancelled, match="after 2 of 6"):
        teach.train(two_labels, str(BACKBONE), stopped, progress=lambda done, total: seen.append(done),
                    cancelled=lambda: len(seen) >= 8)
    with pytest.raises(teach.Cancelled, match="after 0 of 6"):
        teach.train(two_labels, str(BACKBONE), stopped, deadline=0.0)
    assert not stopped.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data", "lib.onnx"]


def test_head_keeps_a_symbolic_batch_axis():
    """A backbone with a dynamic batch (fetch-model's, models/export.py's) keeps it in the taught model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edge_runtime.teach import features as feat
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pool"]), helper.make_node("Flatten", ["pool"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert feat.find_features(model, "m") == "flat"
    taught = feat.with_head(feat.cut(model, "flat", "m"), rng.normal(size=(3, 8)), np.zeros(3), normalise=True,
                            batch=feat.batch_dim(model))
    assert taught.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [i.name for i in taught.graph.initializer] == ["teach_head.weight", "teach_head.bias"]   # w dropped
    sess = ort.InferenceSession(taught.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"input": rng.normal(size=(5, 8, 4, 4)).astype(np.float32)})[0]
    assert probs.shape == (5, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
