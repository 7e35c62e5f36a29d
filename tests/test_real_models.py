"""Real pretrained models and real photos through the real daemon: proves colour order,
normalisation, layout, output scaling and label mapping (../shared/fixtures, third-party data)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import FIXTURES, run_daemon

_EXPECTED_FILE = FIXTURES / "expected.json"
EXPECTED = json.loads(_EXPECTED_FILE.read_text())["models"] if _EXPECTED_FILE.exists() else {}


@pytest.fixture(scope="module")
def photo_folder(fixtures, tmp_path_factory):
    # A folder source reads a folder; the photos are copied into tmp at test time, never into the repo.
    folder = tmp_path_factory.mktemp("photos")
    for photo in (fixtures / "photos").iterdir():
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_daemon_reproduces_expected_top1(model, fixtures, photo_folder):
    result = run_daemon("--source", photo_folder, "--model", fixtures / "models" / f"{model}.onnx",
                        "--top-k", "3", "--threads", "2", timeout=120)
    assert result.returncode == 0, result.stderr
    by_photo = {p["path"].rsplit("/", 1)[-1]: p for p in result.predictions}
    assert set(by_photo) == set(EXPECTED[model]), "every photo gets exactly one prediction"
    robust = {photo: x for photo, x in EXPECTED[model].items() if x["robust"]}
    assert len(robust) >= 5
    for photo, want in robust.items():
        top = by_photo[photo]["top"][0]
        assert (top["index"], top["label"]) == (want["top1"], want["label"]), photo
        assert top["score"] == pytest.approx(want["score"], abs=0.03), photo
    # Non-robust cases depend on interpolation details; still, most must agree.
    agree = sum(by_photo[p]["top"][0]["index"] == x["top1"] for p, x in EXPECTED[model].items())
    assert agree >= len(EXPECTED[model]) - 3


def test_swapped_colour_order_is_caught(fixtures, photo_folder, tmp_path):
    """The same model described as BGR must get the colour-sensitive photos wrong: the test can fail."""
    model = "mobilenet_v2_1.0_224_quant"
    src = fixtures / "models" / f"{model}.onnx"
    (tmp_path / f"{model}.onnx").symlink_to(src)
    sidecar = (fixtures / "models" / f"{model}.yaml").read_text()
    labels = (fixtures / "imagenet_labels.txt").resolve()
    sidecar = sidecar.replace("color: rgb", "color: bgr").replace("../imagenet_labels.txt", str(labels))
    (tmp_path / f"{model}.yaml").write_text(sidecar)
    result = run_daemon("--source", photo_folder, "--model", tmp_path / f"{model}.onnx", timeout=120)
    assert result.returncode == 0, result.stderr
    by_photo = {p["path"].rsplit("/", 1)[-1]: p["top"][0]["index"] for p in result.predictions}
    sensitive = ["grace_hopper.png", "hot_dog.jpg", "rocket.jpg", "imprinting_hotdog_train_0.png",
                 "imprinting_dog_train_0.png"]
    wrong = [p for p in sensitive if by_photo[p] != EXPECTED[model][p]["top1"]]
    assert len(wrong) >= 3, f"swapping R and B changed only {wrong}"
