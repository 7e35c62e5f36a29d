"""Hostile HTTP clients (issue 15, item 6): slow heads, full slots, DNS rebinding, version leaks.
Real sockets on 127.0.0.1 against the real server (in-process sink, and once the daemon)."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
from harness import Daemon, free_port, wait_until
from tiny_model import make_channel_model

from edge_runtime import config as config_mod
from edge_runtime.web import http as http_mod
from edge_runtime.sinks import SinkContext
from edge_runtime.web.http import HttpSink
from edge_runtime.sources import Frame
from edge_runtime.core.stats import Stats

HEALTH = {"healthy": True, "status": "ok", "reason": None, "source_connected": True, "last_frame_age_s": 0.01}


def make_sink(listen="127.0.0.1:0", **cfg) -> HttpSink:
    s = HttpSink(config_mod.HttpConfig(listen=listen, **cfg)).start(SinkContext(
        stats=Stats(), health=lambda unhealthy_after: HEALTH,
        model_info={"path": "m.onnx", "arch": "a", "weights": "w", "input": "32x32", "labels": "3"}))
    s.port = s.address[1]
    return s


@pytest.fixture
def sink():
    s = make_sink(max_connections=32)
    s.prediction({"type": "prediction", "frame": 0, "ts": 1.0, "source": "synthetic://32x32", "top": [],
                  "latency_ms": {"preprocess": 1.0, "inference": 1.0, "total": 2.0}},
                 Frame(image=np.zeros((24, 32, 3), np.uint8), index=0, ts=1.0, mono=0.0))
    yield s
    s.close()


def request(port: int, path: str = "/healthz", host: str | None = "127.0.0.1", timeout: float = 3.0,
            extra: bytes = b"") -> tuple[int, dict, bytes]:
    """One raw HTTP/1.1 GET; (status, headers, body)."""
    head = f"GET {path} HTTP/1.1\r\n".encode() + (f"Host: {host}\r\n".encode() if host is not None else b"")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head + extra + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


# --- slow clients -------------------------------------------------------------------------------------

def test_sixty_trickling_clients_do_not_starve_healthz_and_are_dropped(sink, monkeypatch):
    monkeypatch.setattr(http_mod, "HEAD_DEADLINE_S", 2.0)
    slow = []
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        s.sendall(b"GET /latest HTTP/1.1\r\n")
        slow.append(s)
    try:
        t0 = time.monotonic()
        for i in range(3):                         # a header line every 0.5 s, as a trickler does
            for s in slow:
                s.sendall(f"X-Slow-{i}: 1\r\n".encode())
            t = time.monotonic()
            status, _, body = request(sink.port, "/healthz")
            assert status == 200 and json.loads(body)["healthy"], body
            assert time.monotonic() - t < 1.0
            assert request(sink.port, "/metrics")[0] == 200
            time.sleep(0.5)
        # the total deadline, not a per-read timeout: every trickler is dropped ~2 s after connecting
        for s in slow:
            s.settimeout(max(0.1, t0 + 4.0 - time.monotonic()))
            assert s.recv(100) == b"", "a trickling client was served or kept"
        assert time.monotonic() - t0 < 4.5
    finally:
        for s in slow:
            s.close()


def test_full_slots_refuse_heavy_paths_but_monitoring_still_answers():
    sink = make_sink(max_connections=2, mjpeg_fps=5)
    sink.prediction({"type": "prediction", "frame": 0, "ts": 1.0, "source": "s", "top": [],
                     "latency_ms": {"preprocess": 1.0, "inference": 1.0, "total": 2.0}},
                    Frame(image=np.zeros((24, 32, 3), np.uint8), index=0, ts=1.0, mono=0.0))
    viewers = []
    try:
        for _ in range(2):                         # two MJPEG viewers hold both slots
            s = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            viewers.append(s)
        wait_until(lambda: sink.stream_clients == 2, 5, "two viewers")
        assert request(sink.port, "/latest")[0] == 503
        assert request(sink.port, "/snapshot.jpg")[0] == 503
        for _ in range(6):                         # more than the reserve, one after another
            assert request(sink.port, "/healthz")[0] == 200
            assert request(sink.port, "/metrics")[0] == 200
    finally:
        for s in viewers:
            s.close()
        sink.close()


def test_an_oversized_head_is_refused(sink):
    status, headers, _ = request(sink.port, "/healthz", extra=b"X-Big: " + b"a" * 40000 + b"\r\n")
    assert status == 431 and "python" not in headers.get("server", "").lower()
    assert request(sink.port, "/healthz")[0] == 200


# --- cross-site clients: Host --------------------------------------------------------------------------

@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1", True), ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("LOCALHOST", True),
    ("[::1]:{port}", True), (None, True),
    ("evil.example:{port}", False), ("attacker.rebind.network", False), ("192.168.1.50:{port}", False),
    ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
])
def test_host_header_on_loopback(sink, host, ok):
    h = None if host is None else host.format(port=sink.port)
    for path in ("/latest", "/snapshot.jpg", "/"):
        status, headers, body = request(sink.port, path, host=h)
        assert (status != 421) == ok, (path, h, status, body[:200])
        if not ok:
            assert b"hunter" not in body and headers["content-type"] == "application/json"


def test_host_header_when_bound_to_all_interfaces_and_configured_names():
    sink = make_sink("0.0.0.0:0", allowed_hosts=("cam.lan",))
    try:
        assert request(sink.port, "/healthz", host="cam.lan:8080")[0] == 200
        assert request(sink.port, "/healthz", host="192.168.1.50")[0] == 200     # an address: not rebinding
        assert request(sink.port, "/healthz", host=f"{http_mod.hostname()}.local")[0] == 200
        assert request(sink.port, "/healthz", host="evil.example")[0] == 421
    finally:
        sink.close()


def test_server_header_does_not_advertise_python(sink):
    for path, host in (("/healthz", "127.0.0.1"), ("/nope", "127.0.0.1"), ("/latest", "evil.example")):
        _, headers, _ = request(sink.port, path, host=host)
        assert headers["server"] == "edge_runtime" and "python" not in json.dumps(headers).lower()


def test_daemon_allowed_hosts_from_config(tmp_path):
    port = free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"http:\n  listen: 127.0.0.1:{port}\n  allowed_hosts: [cam.lan, Front-Door.local]\n")
    model = make_channel_model(tmp_path / "m.onnx")
    d = Daemon("--config", cfg, "--source", "synthetic://32x32?fps=20", "--model", model,
               "--quiet-predictions")
    try:
        def up():
            try:
                return request(port, "/latest", host="cam.lan")[0] == 200
            except OSError:
                return False
        wait_until(up, 30, "the daemon's /latest")
        assert request(port, "/latest", host="front-door.local:80")[0] == 200
        assert request(port, "/latest", host="evil.example")[0] == 421
    finally:
        assert d.stop() == 0, d.stderr()
