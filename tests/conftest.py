"""Shared fixtures: generated models, real fixture paths, and a helper that runs the real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGE_FIXTURES", REPO.parent / "shared" / "fixtures"))

sys.path.insert(0, str(REPO / "tests"))
from tiny_model import make_channel_model, make_random_model  # noqa: E402


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not (FIXTURES / "expected.json").exists():
        pytest.fail(f"real-model fixtures not found at {FIXTURES} (set EDGE_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small random-weight classifier (224x224, 1000 classes) with its description embedded."""
    return make_random_model(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def channel_model(tmp_path_factory) -> Path:
    return make_channel_model(tmp_path_factory.mktemp("models") / "channel.onnx")


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    """A 640x480, 30-frame MJPEG AVI written with OpenCV: colour changes every 10 frames."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    assert writer.isOpened()
    for i in range(30):
        frame = np.zeros((480, 640, 3), np.uint8)
        frame[:] = [(0, 0, 255), (0, 255, 0), (255, 0, 0)][i // 10]    # BGR: red, green, blue
        cv2.putText(frame, str(i), (50, 240), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
        writer.write(frame)
    writer.release()
    return path


@dataclass
class DaemonResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def predictions(self) -> list[dict]:
        return [x for x in self.lines if x["type"] == "prediction"]

    @property
    def stats(self) -> list[dict]:
        return [x for x in self.lines if x["type"] == "stats"]


def daemon_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_daemon(*args: str, timeout: float = 60, env: dict | None = None, cwd: Path | None = None) -> DaemonResult:
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or daemon_env(), cwd=cwd or REPO)
    return DaemonResult(proc.returncode, proc.stdout, proc.stderr)


def start_daemon(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or daemon_env(), cwd=REPO, **kwargs)
