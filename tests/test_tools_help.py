"""`--help` of every tool in models/ comes back at once: torch (seconds to import) is imported only after
the arguments are parsed. Also true, and useful, where torch is not installed (`./install.sh --dev`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
heavy = sorted(m for m in ("torch", "torchvision", "onnx") if m in sys.modules)
print("IMPORTED:", ",".join(heavy))
"""


@pytest.mark.parametrize("tool", ["export.py", "quantize.py", "distill.py", "bench_fused.py"])
def test_help_imports_no_torch(tool):
    proc = subprocess.run([sys.executable, "-c", PROBE, f"models/{tool}"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and proc.stdout.strip().endswith("IMPORTED:"), proc.stdout[-300:]
