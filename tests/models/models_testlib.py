"""Fixtures and helpers shared by the models/ tests; each test module imports what it uses.

Not a conftest.py on purpose: the top-level tests do `from conftest import ...`, and a second module
named conftest would shadow theirs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def fixtures_dir() -> Path:
    """../shared/fixtures beside the repository (override with EDGE_FIXTURES)."""
    return Path(os.environ.get("EDGE_FIXTURES") or ROOT.parent / "shared" / "fixtures")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    path = fixtures_dir()
    if not (path / "models").is_dir() or not (path / "photos").is_dir():
        pytest.fail(f"real-model fixtures not found at {path} (set EDGE_FIXTURES to their folder)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def run_model_tool(capsys):
    """run_model_tool(main, argv) runs a tool's main() the way its script does (errors become one line and an
    exit code) and returns (exit code, stdout, stderr)."""
    from models.common import run_main

    def run(main, argv) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = run_main(main, "tool", [str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def onnx_props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="session")
def onnx_metadata():
    """onnx_metadata(path) -> the ONNX file's metadata_props as a dict."""
    return onnx_props


@pytest.fixture(scope="session")
def trained_like():
    """trained_like(model, seed) gives a network trained-looking weights and statistics (in place)."""
    return perturb_


def perturb_(model, seed: int = 0) -> None:
    """Give a freshly initialised network trained-looking statistics: logits of order 1-10 rather
    than ~1e-9, so output comparisons mean something."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.05)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 1:       # norm weight/bias, conv/linear bias
                t.copy_((torch.rand(t.shape, generator=g) + 0.5) if "weight" in name
                        else torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 2:       # linear weights
                t.copy_(torch.randn(t.shape, generator=g) / t.shape[1] ** 0.5 * 1.5)
