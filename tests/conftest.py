"""Shared fixtures: generated models, real fixture paths, and a helper that runs the real daemon."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Re-exported: the harness is the one place these live.
from harness import (FIXTURES, REPO, Daemon, DaemonResult, daemon_env, free_port, run_daemon,  # noqa: E402,F401
                     start_daemon, wait_until)
from tiny_model import make_channel_model, make_random_model  # noqa: E402


# What makes a test slow: it starts a process (the daemon, a broker, a browser, an installer, a
# training run) or uses a fixture that does. `pytest -m "not slow"` is the quick in-process loop.
SLOW_CALLS = ("Daemon(", "run_daemon(", "start_daemon(", "subprocess.", "Broker(", "Chromium(")
SLOW_FIXTURES = {"daemons", "live_daemon", "broker", "running"}
SLOW_FILES = {"test_install.py", "test_systemd_unit.py", "test_bench.py", "test_real_models.py"}


def _source_with_helpers(item) -> str:
    """The test's source and that of its own module's functions and fixtures it calls or uses, to any
    depth: a helper that starts a browser (test_collect_http's browser_or_skip -> Chromium) makes the
    test slow as if it called it itself (that one escaped the slow set and made the fast set flaky)."""
    import inspect
    import re

    function = getattr(item, "function", None)
    if function is None:
        return ""
    module = function.__module__
    todo = [function]
    for defs in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
        todo += [d.func for d in defs if getattr(d.func, "__module__", None) == module]
    seen, parts = set(), []
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        parts.append(source)
        for name in re.findall(r"\b([A-Za-z_]\w*)\s*\(", source):
            helper = function.__globals__.get(name)
            if inspect.isfunction(helper) and helper.__module__ == module:
                todo.append(helper)
    return "\n".join(parts)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath))
        source = _source_with_helpers(item)
        if path.name in SLOW_FILES or "models" in path.parts or SLOW_FIXTURES & set(item.fixturenames) \
                or any(call in source for call in SLOW_CALLS):
            item.add_marker(pytest.mark.slow)


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
