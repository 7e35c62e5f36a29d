"""Reload without a restart: SIGHUP re-reads the config and the model, swaps them between two frames,
keeps the camera open, and refuses a bad config or model while it keeps classifying with what it had."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from harness import Daemon, daemon_env, free_port, wait_until
from tiny_model import make_channel_model, make_random_model

pytestmark = pytest.mark.slow


class NotifySocket:
    """A unix datagram socket like systemd's NOTIFY_SOCKET, collecting what the daemon sends."""

    def __init__(self, path: Path):
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return


def labels_of(predictions: list[dict]) -> set[str]:
    return {p["top"][0]["label"] for p in predictions}


@pytest.fixture
def running(tmp_path):
    """A daemon on a live 30 fps source, classifying with model A (1000 'class N' labels), its model file
    and config in tmp_path, with a notify socket and the HTTP endpoint."""
    make_random_model(tmp_path / "model.onnx", size=(64, 64), resize=None)
    make_channel_model(tmp_path / "b.onnx")                      # labels: red, green, blue
    config = tmp_path / "edge.yaml"
    config.write_text("model: model.onnx\nstats_interval: 0.5\n")
    notify = NotifySocket(tmp_path / "notify")
    port = free_port()
    d = Daemon("--config", config, "--source", "synthetic://160x120?fps=30", "--http", f"127.0.0.1:{port}",
               env=daemon_env(NOTIFY_SOCKET=str(notify.path)))
    wait_until(lambda: len(d.predictions()) >= 10, 30, "the first predictions")
    yield d, tmp_path, notify, port
    d.kill()


def hup_and_wait(d: Daemon, what: str) -> None:
    before = d.stderr().count("reload: reading")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.stderr().count("reload: reading") > before and what in d.stderr().split("reload: reading")[-1],
               30, f"the reload to end with '{what}'")


def test_sighup_swaps_the_model_between_two_frames(running):
    d, tmp, notify, port = running
    assert labels_of(d.predictions()) <= {f"class {i}" for i in range(1000)}
    (tmp / "b.onnx").replace(tmp / "model.onnx")              # the new model, under the same path
    hup_and_wait(d, "now classifying")
    wait_until(lambda: labels_of(d.predictions()[-5:]) <= {"red", "green", "blue"}, 10, "the new model's labels")
    time.sleep(1.0)
    assert d.stop() == 0
    frames = [p["frame"] for p in d.predictions()]
    final = d.final_stats()
    # Nothing lost around the swap: every frame the source gave was classified (the model is fast, so
    # a live source drops none), in order, and the camera was not reopened.
    assert frames == list(range(len(frames))) and final["frames_dropped"] == 0
    assert final["reloads"] == 1 and final["reload_failures"] == 0 and final["source_reconnects"] == 0
    old, new = labels_of(d.predictions()[:10]), labels_of(d.predictions()[-10:])
    assert old.isdisjoint({"red", "green", "blue"}) and new <= {"red", "green", "blue"}
    # systemd heard RELOADING=1 (with MONOTONIC_USEC), then READY=1
    i = next(i for i, m in enumerate(notify.messages) if m.startswith("RELOADING=1"))
    assert "\nMONOTONIC_USEC=" in notify.messages[i] and int(notify.messages[i].split("MONOTONIC_USEC=")[1]) > 0
    assert any(m.startswith("READY=1") for m in notify.messages[i + 1:])
    assert "Traceback" not in d.stderr()


def test_reload_counters_in_metrics(running):
    d, tmp, notify, port = running
    (tmp / "edge.yaml").write_text("model: model.onnx\nstats_interval: 0.5\ntop_k: 2\n")
    hup_and_wait(d, "now classifying")
    wait_until(lambda: len(d.predictions()[-1]["top"]) == 2, 10, "top_k 2 to apply")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "edge_runtime_reloads_total 1.0" in body and "edge_runtime_reload_failures_total 0.0" in body


def _truncated(tmp: Path) -> str:
    data = (tmp / "b.onnx").read_bytes()
    (tmp / "model.onnx").write_bytes(data[: len(data) // 2])
    return "onnxruntime cannot load it"


def _wrong_size(tmp: Path) -> str:
    # A model whose 32x32 input disagrees with the 64x64 its sidecar describes.
    make_random_model(tmp / "other.onnx", size=(32, 32), resize=None, embed=False)
    (tmp / "other.yaml").write_text("input: {size: [64, 64]}\n")
    (tmp / "edge.yaml").write_text("model: other.onnx\nstats_interval: 0.5\n")
    return "has shape"


def _unknown_key(tmp: Path) -> str:
    (tmp / "edge.yaml").write_text("model: b.onnx\nstats_interval: 0.5\ntop_kk: 3\n")
    return "key 'top_kk': unknown key"


def _missing_model(tmp: Path) -> str:
    (tmp / "edge.yaml").write_text("model: nope.onnx\nstats_interval: 0.5\n")
    return "file not found"


@pytest.mark.parametrize("breaks", [_truncated, _wrong_size, _unknown_key, _missing_model])
def test_a_bad_reload_is_refused_and_the_old_model_goes_on(running, breaks):
    d, tmp, notify, port = running
    problem = breaks(tmp)
    hup_and_wait(d, "reload refused")
    line = next(x for x in d.stderr().splitlines() if "reload refused" in x)
    assert problem in line and str(tmp) in line                  # the file and the problem, in one line
    n = len(d.predictions())
    wait_until(lambda: len(d.predictions()) >= n + 15, 10, "classification to go on")
    assert labels_of(d.predictions()[n:]) <= {f"class {i}" for i in range(1000)}     # still model A
    assert d.stop() == 0
    final = d.final_stats()
    assert final["reloads"] == 0 and final["reload_failures"] == 1
    assert "Traceback" not in d.stderr()
    # systemd is told the reload is over (READY=1 after RELOADING=1) even though it was refused
    last = max(i for i, m in enumerate(notify.messages) if m.startswith("RELOADING=1"))
    assert any(m.startswith("READY=1") for m in notify.messages[last + 1:])


def test_settings_that_need_a_restart_are_named(running):
    d, tmp, notify, port = running
    (tmp / "edge.yaml").write_text("model: model.onnx\nstats_interval: 0.5\nthreads: 1\ncapture: {timeout: 3}\n")
    hup_and_wait(d, "now classifying")
    warning = next(x for x in d.stderr().splitlines() if "takes a restart" in x)
    assert "capture" in warning and "threads" in warning


def test_a_reload_applies_region_models_labels_and_boxes_without_a_restart(tmp_path):
    """The teach loop's last step: give a region a model, change that model's labels, move a box; each by
    a reload, never a restart (frames contiguous, the source never reopened)."""
    make_random_model(tmp_path / "model.onnx", size=(64, 64), resize=None)
    make_channel_model(tmp_path / "c.onnx", embed=False)
    (tmp_path / "c.yaml").write_text("input: {size: [32, 32]}\nlabels: [red, green, blue]\n")
    config = tmp_path / "edge.yaml"
    regions = "regions:\n  - {name: left, box: [0, 0, 0.5, 1]%s}\n  - {name: right, box: %s}\n"
    top = "model: model.onnx\nstats_interval: 0.5\n"
    config.write_text(top + regions % ("", "[0.5, 0, 0.5, 1]"))
    port = free_port()
    d = Daemon("--config", config, "--source", "synthetic://160x120?fps=30", "--http", f"127.0.0.1:{port}")
    try:
        wait_until(lambda: len(d.predictions()) >= 10, 30, "the first predictions")
        assert "region models: left: %s, right: %s" % (tmp_path / "model.onnx", tmp_path / "model.onnx") in d.stderr()

        def left_labels(n=6):
            return labels_of([p for p in d.predictions() if p["region"] == "left"][-n:])

        config.write_text(top + regions % (", model: c.onnx", "[0.5, 0, 0.5, 1]"))
        hup_and_wait(d, "now classifying")
        wait_until(lambda: left_labels() <= {"red", "green", "blue"}, 10, "the region's new model")
        assert f"region models: left: {tmp_path / 'c.onnx'}, right: {tmp_path / 'model.onnx'}" in d.stderr()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert f'edge_runtime_region_model_info{{path="{tmp_path / "c.onnx"}",region="left"}} 1.0' in body

        (tmp_path / "c.yaml").write_text("input: {size: [32, 32]}\nlabels: [rojo, verde, azul]\n")
        hup_and_wait(d, "now classifying")
        wait_until(lambda: left_labels() <= {"rojo", "verde", "azul"}, 10, "the region model's new labels")

        config.write_text(top + regions % (", model: c.onnx", "[0.25, 0.25, 0.5, 0.5]"))
        hup_and_wait(d, "now classifying")

        def right_box():
            latest = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats.json", timeout=5).read())
            return next(r["box"] for r in latest["regions"] if r["name"] == "right")
        wait_until(lambda: right_box() == [0.25, 0.25, 0.5, 0.5], 10, "the moved box")
        n = len(d.predictions())
        wait_until(lambda: len(d.predictions()) >= n + 10, 10, "classification to go on")
        assert d.stop() == 0
        final = d.final_stats()
        assert final["reloads"] == 3 and final["reload_failures"] == 0 and final["source_reconnects"] == 0
        assert final["region_models"] == {"left": str(tmp_path / "c.onnx"), "right": str(tmp_path / "model.onnx")}
        assert "takes a restart" not in d.stderr() and "Traceback" not in d.stderr()
        frames = sorted({p["frame"] for p in d.predictions()})
        assert frames == list(range(len(frames)))                    # contiguous through three reloads
        assert "from None" not in d.stderr()
    finally:
        d.kill()


def test_adding_a_region_names_it_as_needing_a_restart(running):
    d, tmp, notify, port = running
    (tmp / "edge.yaml").write_text("model: model.onnx\nstats_interval: 0.5\n"
                                   "regions:\n  - {name: door, box: [0, 0, 1, 1]}\n")
    hup_and_wait(d, "now classifying")
    warning = next(x for x in d.stderr().splitlines() if "takes a restart" in x)
    assert "regions added door" in warning


# Loaded by the daemon's interpreter (PYTHONPATH): while the file EDGE_TEST_FAIL names exists, a session's
# warm-up raises what onnxruntime would (a RuntimeError, no UserError): a failure injected into the real
# daemon's reload, between loading the model and swapping it in.
INJECT = '''
import os
from pathlib import Path

import edge_runtime.engines.ort as engine

_warm_up = engine.Engine.warm_up

def warm_up(self, *args, **kwargs):
    if Path(os.environ["EDGE_TEST_FAIL"]).exists():
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected warm-up failure")
    return _warm_up(self, *args, **kwargs)

engine.Engine.warm_up = warm_up
'''


def test_an_unexpected_reload_failure_in_the_real_daemon_leaves_reloading_working(tmp_path):
    make_random_model(tmp_path / "model.onnx", size=(64, 64), resize=None)
    make_channel_model(tmp_path / "b.onnx")
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(INJECT)
    flag = tmp_path / "fail-now"
    config = tmp_path / "edge.yaml"
    config.write_text("model: model.onnx\nstats_interval: 0.5\n")
    notify = NotifySocket(tmp_path / "notify")
    env = daemon_env(NOTIFY_SOCKET=str(notify.path), EDGE_TEST_FAIL=str(flag))
    env["PYTHONPATH"] = str(tmp_path / "inject") + ":" + env["PYTHONPATH"]
    d = Daemon("--config", config, "--source", "synthetic://160x120?fps=30", env=env)
    try:
        wait_until(lambda: len(d.predictions()) >= 10, 30, "the first predictions")
        config.write_text("model: b.onnx\nstats_interval: 0.5\n")
        flag.touch()
        hup_and_wait(d, "still running with the previous config and model")
        line = next(x for x in d.stderr().splitlines() if "still running with the previous" in x)
        assert "RuntimeError" in line and "injected warm-up failure" in line
        n = len(d.predictions())
        wait_until(lambda: len(d.predictions()) >= n + 10, 10, "classification to go on")
        assert labels_of(d.predictions()[n:]) <= {f"class {i}" for i in range(1000)}      # the old model
        last = max(i for i, m in enumerate(notify.messages) if m.startswith("RELOADING=1"))
        wait_until(lambda: any(m.startswith("READY=1") for m in notify.messages[last + 1:]), 5, "READY=1")
        flag.unlink()
        hup_and_wait(d, "now classifying")                                   # the next SIGHUP is served
        wait_until(lambda: labels_of(d.predictions()[-5:]) <= {"red", "green", "blue"}, 10, "the new model")
        assert d.stop() == 0
        final = d.final_stats()
        assert final["reloads"] == 1 and final["reload_failures"] == 1
        assert "Traceback" not in d.stderr()
    finally:
        d.kill()
