"""models/distill.py where PyTorch is not installed (`./install.sh --dev`): one line saying what to
install, exit 2; and its --weights files, recognised by SHA-256 before PyTorch is needed."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO
from edge_runtime.modelzoo import mobilenetv3_arch as arch_tables
from models import distill
from models.common import ToolError


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch is installed here")
@pytest.mark.parametrize("tool", [["distill.py", "--data", "d", "--output", "o.onnx"], ["export.py"]])
def test_without_torch_it_is_one_line_saying_what_to_install(tool, tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(REPO / "models" / tool[0]), *tool[1:]], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{tool[0]}: error: needs PyTorch, which is not installed: ./install.sh --dev --models "
        "(or pip install -r models/requirements.txt)"]
    assert not (tmp_path / "o.onnx").exists()


def test_weights_files_are_recognised_by_their_pinned_digest(tmp_path, monkeypatch):
    small, other = tmp_path / "copy-of-small.pth", tmp_path / "other.pth"
    small.write_bytes(b"torchvision small " * 100)
    other.write_bytes(b"x" * len(small.read_bytes()))        # same size, another digest
    pinned = dict(arch_tables.IMAGENET_WEIGHTS)
    pinned["mobilenet_v3_small"] = arch_tables.Weights("https://example.invalid/mobilenet_v3_small-0.pth",
                                                       hashlib.sha256(small.read_bytes()).hexdigest(), 1800)
    monkeypatch.setattr(arch_tables, "IMAGENET_WEIGHTS", pinned)
    assert distill.imagenet_files([small]) == {"mobilenet_v3_small": small}
    with pytest.raises(ToolError, match=r"other.pth: not torchvision's ImageNet MobileNetV3 file .*expected one of "
                                        r"mobilenet_v3_small-0.pth, mobilenet_v3_large-8738ca79.pth"):
        distill.imagenet_files([other])
    with pytest.raises(ToolError, match="given twice"):
        distill.imagenet_files([small, small])
    with pytest.raises(ToolError, match="cannot read it"):
        distill.imagenet_files([tmp_path / "missing.pth"])


def test_weights_is_refused_with_random_init():
    with pytest.raises(SystemExit) as exc:
        distill.parse_args(["--data", "d", "--output", "o.onnx", "--init", "random", "--weights", "w.pth"])
    assert exc.value.code == 2
