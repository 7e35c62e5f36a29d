"""distill.py on a folder made by `python -m edge_runtime collect`, as it is: unlabeled/ ignored with a note,
per-class accuracy and confusion matrix of the held-out split printed (and checked here against that
split, classified again by the exported file), and classes too small for a held-out split refused."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402

from models import distill  # noqa: E402
from models.imagefolder import class_folders  # noqa: E402
from models.training import split_samples  # noqa: E402

ROOT = models_testlib.ROOT
PER_CLASS = 15                          # held out at --val-split 0.2: 3 of each class
TINY_RUN = ["--init", "random", "--input-size", 32, "--batch-size", 8, "--workers", 0, "--threads", 1,
            "--epochs", 1, "--teacher-epochs", 1, "--no-progress"]


def write_clip(path, door: bool, frames: int, seed: int) -> None:
    """A 64x48 clip whose background changes every frame (so collect keeps each frame); `door`: a dark
    bar across the middle."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for _ in range(frames):
        blocks = rng.integers(90, 250, (6, 8, 3), dtype=np.uint8)
        frame = cv2.resize(blocks, (64, 48), interpolation=cv2.INTER_NEAREST)
        if door:
            frame[:, 24:40] = (30, 30, 30)
        writer.write(frame)
    writer.release()


def collect(*args) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "edge_runtime", "collect", *map(str, args)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """DIR/closed, DIR/open and DIR/unlabeled, written by `collect` from generated clips."""
    tmp = tmp_path_factory.mktemp("collected")
    data = tmp / "data"
    for label, door, seed in (("closed", True, 1), ("open", False, 2), (None, True, 3)):
        clip = tmp / f"{label}.avi"
        write_clip(clip, door, PER_CLASS if label else 4, seed)
        collect("--source", clip, "--out", data, "--every", 0,
                *(["--label", label] if label else ["--unlabeled"]))
    assert len(list((data / "closed").glob("*.jpg"))) == PER_CLASS
    assert len(list((data / "unlabeled").glob("*.jpg"))) == 4
    return data


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    from models.common import run_main

    out = tmp_path_factory.mktemp("distill") / "door.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = run_main(distill.main, "distill.py", [str(a) for a in ["--data", dataset, "--output", out] + TINY_RUN])
    assert rc == 0, stdout.getvalue()
    return out, stdout.getvalue()


def parse_report(stdout: str) -> tuple[dict, list[str], list[list[int]]]:
    """(per-class {name: (correct, images, accuracy)}, column names, matrix rows) from distill's output."""
    lines = stdout.splitlines()
    start = lines.index("per-class accuracy:")
    per_class = {}
    i = start + 1
    while lines[i].startswith("  "):
        name, acc, correct, images = re.fullmatch(r"\s+(\S+)\s+([0-9.]+)\s+\((\d+)/(\d+)\)", lines[i]).groups()
        per_class[name] = (int(correct), int(images), float(acc))
        i += 1
    assert lines[i] == "confusion matrix (rows: true class, columns: predicted class):"
    columns = lines[i + 1].split()
    rows = [line.split() for line in lines[i + 2:i + 2 + len(columns)]]
    assert [r[0] for r in rows] == columns
    return per_class, columns, [[int(v) for v in r[1:]] for r in rows]


def test_report_is_the_held_out_split_through_the_exported_file(trained, dataset, onnx_metadata):
    out, stdout = trained
    from edge_runtime.teach.collect import UNLABELED

    assert distill.UNLABELED == UNLABELED
    assert f"note: ignoring {dataset / 'unlabeled'} (4 images)" in stdout
    assert "2 classes (closed, open): 24 training, 6 validation images" in stdout     # unlabeled is no class
    per_class, columns, matrix = parse_report(stdout)
    assert columns == ["closed", "open"]

    # The same held-out split, classified again here by the exported file through the runtime's preprocessing.
    classes, samples = class_folders(dataset, ignore=("unlabeled",))
    _, held_out = split_samples(samples, 0.2, seed=0)
    spec = ms.resolve(str(out), onnx_metadata(out), None)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    prep = Preprocessor(spec.input)
    expected = [[0, 0], [0, 0]]
    for path, label in held_out:
        expected[label][int(session.run(None, {"input": prep(cv2.imread(str(path)))})[0].argmax())] += 1
    assert matrix == expected
    for i, name in enumerate(classes):
        correct, images, acc = per_class[name]
        assert (correct, images) == (expected[i][i], sum(expected[i])) == (expected[i][i], 3)
        assert acc == pytest.approx(correct / images, abs=5e-4)
    overall = float(re.search(r"onnxruntime ([0-9.]+) \(", stdout).group(1))
    assert overall == pytest.approx((expected[0][0] + expected[1][1]) / 6, abs=5e-4)


@pytest.mark.parametrize("small, val_split, needs", [(3, "0.2", 5), (1, "0.5", 2), (3, "0.3", 4)])
def test_a_class_too_small_for_a_held_out_split(small, val_split, needs, tmp_path, run_model_tool):
    data = tmp_path / "data"
    for name, n in (("big", 8), ("small", small)):
        (data / name).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(data / name / f"{i}.jpg"), np.full((40, 40, 3), 20 * i, np.uint8))
    rc, out, err = run_model_tool(distill.main, ["--data", data, "--output", tmp_path / "m.onnx",
                                                 "--val-split", val_split] + TINY_RUN)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    plural = "image" if small == 1 else "images"
    assert f"'small' has {small} {plural}" in err and f"each class needs at least {needs}" in err
    assert "'big'" not in err and not (tmp_path / "m.onnx").exists()


def test_unlabeled_is_not_a_class(tmp_path, run_model_tool):
    data = tmp_path / "data"
    for name in ("door", "unlabeled"):
        (data / name).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(data / name / f"{i}.jpg"), np.full((40, 40, 3), 20 * i, np.uint8))
    rc, _, err = run_model_tool(distill.main, ["--data", data, "--output", tmp_path / "m.onnx"] + TINY_RUN)
    assert rc == 2 and "found 1" in err and len(err.strip().splitlines()) == 1


def test_help_does_not_load_pytorch():
    code = ("import sys\nfrom models import distill\ntry:\n    distill.main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0 and result.stdout.strip().endswith("False"), result.stderr
    assert "--data" in result.stdout
