"""The dependency lists agree: pyproject.toml's dependencies are requirements.txt's (one onnxruntime
floor), the development set has no PyTorch (`./install.sh --dev --models` adds models/requirements.txt)."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def requirements(name: str) -> list[str]:
    lines = (REPO / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(project["dependencies"]) == sorted(requirements("requirements.txt"))
    floors = {r for f in ("requirements.txt", "models/requirements.txt") for r in requirements(f)
              if r.startswith("onnxruntime")} | {r for r in project["dependencies"] if r.startswith("onnxruntime")}
    assert floors == {"onnxruntime>=1.27"}
    assert "onnx>=1.16" in project["dependencies"]          # fetch-model on the device


def test_dev_set_has_no_torch_and_models_set_has():
    dev = requirements("requirements-dev.txt")
    assert "-r requirements.txt" in dev and not any(re.match(r"-r .*models/", r) for r in dev)
    assert not any(re.match(r"(torch|torchvision)\b", r) for r in dev + requirements("requirements.txt"))
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(requirements("models/requirements.txt"))
