"""The torch-free path (edge_runtime/modelzoo, `fetch-model`) against PyTorch: weights saved by torch.save
in the test, read without torch, built into ONNX without torch, and compared with models/export.py's
ONNX of the same weights on random inputs and on the real photos, also through the daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
onnx = pytest.importorskip("onnx")
import cv2  # noqa: E402
import onnxruntime as ort  # noqa: E402

from edge_runtime.modelzoo import fetch  # noqa: E402
from edge_runtime.engines.spec import from_metadata  # noqa: E402
from edge_runtime.modelzoo import mobilenetv3_arch as arch_tables  # noqa: E402
from edge_runtime.modelzoo import mobilenetv3_onnx as builder  # noqa: E402
from edge_runtime.modelzoo import pth  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402
from models import export  # noqa: E402

TV = {"small": torchvision.models.mobilenet_v3_small, "large": torchvision.models.mobilenet_v3_large}
TOL = 1e-4
sys.path.insert(0, str(models_testlib.ROOT / "tests"))
from pthfile import write_pth  # noqa: E402


@pytest.fixture(scope="module", params=["small", "large"])
def saved(request, tmp_path_factory):
    """(arch, .pth saved by torch.save, the torchvision model): torchvision's network, random init with
    trained-looking statistics (logits of order 1-10, so a 1e-4 agreement means something)."""
    arch = request.param
    torch.manual_seed(0)
    model = TV[arch]().eval()
    models_testlib.perturb_(model, seed=1)
    path = tmp_path_factory.mktemp(f"tv_{arch}") / f"{arch}.pth"
    torch.save(model.state_dict(), path)
    return arch, path, model


def props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_reader_gives_torchs_tensors_exactly(saved, tmp_path):
    arch, path, model = saved
    want = model.state_dict()
    for label, file in [("zip", path), ("legacy", tmp_path / "legacy.pth")]:
        if label == "legacy":
            torch.save(want, file, _use_new_zipfile_serialization=False)
        got, extra = pth.load_state_dict(file)
        assert list(got) == list(want) and extra == {}, label
        for key, tensor in want.items():
            assert got[key].dtype == tensor.numpy().dtype and got[key].shape == tuple(tensor.shape), key
            np.testing.assert_array_equal(got[key], tensor.numpy(), err_msg=f"{label} {key}")
    # Non-contiguous views, offsets into a shared storage, half and double precision.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    odd = {"t": base.t(), "slice": base[1:3, ::2], "half": base.half()[2], "double": base.double()[:, 1]}
    torch.save(odd, tmp_path / "odd.pth")
    got = pth.load(tmp_path / "odd.pth")
    for key, tensor in odd.items():
        np.testing.assert_array_equal(got[key], tensor.numpy(), err_msg=key)


def test_table_shapes_are_torchvisions(saved):
    arch, _, model = saved
    for width in (1.0, 0.75):
        theirs = TV[arch](width_mult=width).state_dict() if width != 1.0 else model.state_dict()
        ours = builder.expected_shapes(arch_tables.network(arch, width_mult=width))
        assert list(ours) == list(theirs)
        assert ours == {k: tuple(v.shape) for k, v in theirs.items()}


def test_pthfile_writer_is_torch_saves_format(tmp_path):
    """tests/pthfile.py (the torch-free tests' weights) writes what torch.load reads back exactly."""
    arrays = {"w": np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32),
              "n": np.array(5, np.int64), "h": np.ones(4, np.float16)}
    loaded = torch.load(write_pth(tmp_path / "w.pth", arrays), weights_only=True)
    assert list(loaded) == list(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value)


def test_torch_free_onnx_matches_export_py(saved, tmp_path, capsys, fixtures):
    arch, path, model = saved
    ours, theirs = tmp_path / "fetched.onnx", tmp_path / "exported.onnx"
    assert fetch.main([arch, "--from", str(path), "--output", str(ours)]) == 0, capsys.readouterr().err
    assert export.main(["--arch", arch, "--weights", str(path), "--output", str(theirs)]) in (0, None)
    capsys.readouterr()

    # The same description: preprocessing, labels, and the weights named the same way.
    a, b = props(ours), props(theirs)
    assert from_metadata(a, "a").to_document() == from_metadata(b, "b").to_document()
    for key in ("arch", "weights", "width_mult", "opset", "input_fused"):
        assert a[f"edge_runtime.{key}"] == b[f"edge_runtime.{key}"], key
    assert a["edge_runtime.exporter"].startswith("edge_runtime fetch-model")

    # Random inputs at batch 1 and 3, and the real photos through the runtime's preprocessing.
    s_ours, s_theirs = session(ours), session(theirs)
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((n, 3, 224, 224)).astype(np.float32) for n in (1, 3)]
    prep = Preprocessor(from_metadata(a, "a").input)
    photos = sorted((fixtures / "photos").iterdir())
    inputs.append(np.concatenate([prep(cv2.imread(str(p))).copy() for p in photos]))
    for x in inputs:
        want = s_theirs.run(None, {"input": x})[0]
        got = s_ours.run(None, {"input": x})[0]
        assert np.abs(want).max() > 1.0
        assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs[-1])).numpy()
    assert np.abs(got - reference).max() <= TOL
    if arch == "large":
        return

    # Through the daemon, both files on the photos: the same labels, scores within 1e-4.
    runs = []
    for file in (ours, theirs):
        proc = subprocess.run([sys.executable, "-m", "edge_runtime", "--source", str(fixtures / "photos"),
                               "--model", str(file)], capture_output=True, text=True, timeout=120,
                              cwd=models_testlib.ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append([json.loads(x) for x in proc.stdout.splitlines() if '"prediction"' in x])
    assert len(runs[0]) == len(runs[1]) == len(photos)
    for p, q in zip(*runs, strict=True):
        assert [t["index"] for t in p["top"]] == [t["index"] for t in q["top"]]
        assert max(abs(s["score"] - t["score"]) for s, t in zip(p["top"], q["top"], strict=True)) <= TOL


def test_untrained_builder_follows_torchvisions_init():
    """--untrained: torchvision's initialisation (std of Kaiming fan_out, linear 0.01, BN 1/0) with the
    BatchNorm statistics then measured on synthetic images."""
    net = arch_tables.network("small")
    state = builder.random_state_dict(net, seed=0)
    torch.manual_seed(0)
    reference = TV["small"]().state_dict()
    for key in ("features.0.0.weight", "features.9.block.1.0.weight", "classifier.0.weight", "classifier.3.weight"):
        assert state[key].std() == pytest.approx(float(reference[key].std()), rel=0.1), key
    assert np.all(state["features.0.1.weight"] == 1) and np.all(state["features.0.1.bias"] == 0)
