"""systemd's notify protocol: the Notifier on its own, then the real daemon talking to a real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, daemon_env
from edge_runtime.util.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    """A unix datagram socket like systemd's; yields (path, recv) where recv() returns the messages so far."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)

    def recv(wait: float = 0.2) -> list[str]:
        out, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                out.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        return out

    yield path, recv
    sock.close()


def test_disabled_without_notify_socket_and_cheap():
    n = Notifier({})
    assert n.enabled is False and n.watchdog_interval is None
    n.ready("x"), n.status("y"), n.watchdog(), n.stopping()          # no-ops, no socket made
    assert n._socket is None
    t0 = time.perf_counter()
    for _ in range(100_000):
        n.watchdog()
    assert time.perf_counter() - t0 < 0.5


def test_messages_and_watchdog_interval(notify_socket):
    path, recv = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert n.enabled and n.watchdog_interval == pytest.approx(0.1)
    n.ready("running on synthetic://8x8")
    n.status("12.5 fps\nsecond line")
    n.stopping()
    assert recv() == ["READY=1\nSTATUS=running on synthetic://8x8", "STATUS=12.5 fps second line", "STOPPING=1"]


def test_watchdog_is_rate_limited(notify_socket):
    path, recv = notify_socket
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
    t_end = time.monotonic() + 0.55
    calls = 0
    while time.monotonic() < t_end:
        n.watchdog()
        calls += 1
        time.sleep(0.001)
    pings = recv()
    assert set(pings) == {"WATCHDOG=1"}
    assert 4 <= len(pings) <= 7, (len(pings), calls)        # every 0.1 s over 0.55 s, not every call
    assert calls > 100


def test_no_watchdog_without_usec_or_for_another_pid(notify_socket):
    path, recv = notify_socket
    for env in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "junk"},
                {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}):
        n = Notifier({"NOTIFY_SOCKET": str(path), **env})
        assert n.enabled and n.watchdog_interval is None, env
        n.watchdog()
    assert recv() == []


def test_abstract_socket_address():
    name = f"edge-runtime-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_vanished_socket_never_raises(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": "1"})
    with caplog.at_level("DEBUG", logger="edge_runtime.util.notify"):
        n.ready()
        n.status("x")
        n.watchdog()
        n.stopping()
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1                       # logged once, at debug
    assert failures[0].levelname == "DEBUG"


def test_relative_notify_socket_is_ignored():
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False


def test_daemon_sends_ready_watchdog_stopping_in_order(notify_socket, tiny_model):
    """The real daemon, as systemd would start it: READY after the first frame, WATCHDOG from the
    loop, STATUS with the rate, STOPPING on SIGTERM, then a clean exit."""
    path, recv = notify_socket
    env = daemon_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")     # a ping every 0.2 s
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "--source", "synthetic://320x240?fps=20",
                             "--model", str(tiny_model), "--stats-interval", "0.5", "--quiet-predictions"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            messages += recv(0.1)
            kinds = [m.split("\n")[0].split("=")[0] for m in messages]
            if "READY" in kinds and kinds.count("WATCHDOG") >= 2 and "STATUS" in kinds[1:]:
                break
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    messages += recv(0.3)
    kinds = [m.split("\n")[0].split("=")[0] for m in messages]
    print("notifications:", [m.replace("\n", " | ") for m in messages])
    assert proc.returncode == 0, err
    assert kinds[0] == "READY", kinds                                   # nothing before READY
    assert messages[0].startswith("READY=1\nSTATUS=running on synthetic://")
    assert kinds.count("WATCHDOG") >= 2
    assert kinds.count("STOPPING") == 1
    stop = kinds.index("STOPPING")
    assert 0 < kinds.index("WATCHDOG") and "WATCHDOG" not in kinds[stop:]   # pings only while running
    assert set(kinds[stop + 1:]) <= {"STATUS"}              # at most the final rate after STOPPING
    assert any("fps" in m for m in messages if m.startswith("STATUS=")), messages
    final = json.loads(out.strip().splitlines()[-1])
    assert final["type"] == "stats" and final["final"] is True

