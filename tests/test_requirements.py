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


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)][:2]


def test_ci_runs_the_readme_quick_start_exactly_and_first():
    """CI fails whenever a new user following the README would: its first two commands are the README's."""
    commands = quick_start_commands()
    assert len(commands) == 2 and commands[1] == ".venv/bin/python -m pytest"
    ci = [line.strip() for line in (REPO / ".ci/run").read_text().splitlines()
          if line.strip().startswith(("./install.sh", ".venv/"))]
    assert ci[:2] == commands
    assert ci.index("./install.sh --dev --models") > 1           # the extra comes after, as its own step


def test_litert_is_an_extra_not_a_dependency():
    """LiteRT only with --litert: not in the device's or the dev set, and never the old tflite-runtime."""
    litert = requirements("requirements-litert.txt")
    assert litert == ["ai-edge-litert>=2.1"]
    everything = requirements("requirements.txt") + requirements("requirements-dev.txt")
    assert not any(r.startswith(("ai-edge-litert", "tflite-runtime", "tensorflow")) for r in everything)
    ci = (REPO / ".ci/run").read_text()
    assert "./install.sh --dev --litert" in ci and "tests/test_litert.py" in ci


# Import names whose distribution is called otherwise.
DISTRIBUTION = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "paho": "paho-mqtt",
                "prometheus_client": "prometheus-client", "ai_edge_litert": "ai-edge-litert"}


def test_every_module_the_tests_import_without_a_skip_is_installed_by_dev():
    """`./install.sh --dev` then pytest passes on a fresh clone: a third-party module a test imports outright
    (not through pytest.importorskip, which skips with the reason) is in requirements(-dev).txt."""
    import ast
    import sys

    installed = {re.split(r"[<>=\[ ]", r)[0].lower() for r in requirements("requirements-dev.txt")
                 + requirements("requirements.txt") if not r.startswith("-r")}
    local = ({p.stem for p in (REPO / "tests").rglob("*.py")} | {p.name for p in (REPO / "tests/fakes").iterdir()}
             | {"edge_runtime", "models", "tests", "fakes"})
    # imported only after pytest.importorskip (reason: --models), or in tests that skip without LiteRT (reason:
    # --litert; flatbuffers comes with ai-edge-litert)
    skipped = {"torch", "torchvision", "ai-edge-litert", "flatbuffers"}
    missing = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                if DISTRIBUTION.get(top, top).lower().replace("_", "-") not in installed | skipped:
                    missing.add(f"{path.relative_to(REPO)}: {name}")
    assert not missing
