"""Real faults the daemon must survive: a stream server that dies and returns, one that stalls
(SIGSTOP), a server that is not there yet at start — served by a real ffmpeg on loopback."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from harness import Daemon, free_port

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs Debian's ffmpeg (apt install ffmpeg)")


def serving(port: int) -> bool:
    """Something listens on the port, or has already accepted a client there: ffmpeg's -listen 1
    closes its listening socket on the first accept, and the retrying daemon may get there between
    two polls (which made this wait time out now and then)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    # st 0A = LISTEN, 01 = ESTABLISHED (local address is column 1)
    return any(row[1].endswith(f":{port:04X}") and row[3] in ("0A", "01") for row in rows)


class StreamServer:
    """ffmpeg serving a live MPEG-TS test pattern over HTTP to one client (-listen 1)."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.ts"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", "testsrc=size=320x240:rate=25", "-c:v", "mpeg1video", "-q:v", "5", "-f", "mpegts",
             "-listen", "1", self.url], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        # Wait until it listens, without connecting: -listen 1 serves exactly one client.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if serving(self.port):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ffmpeg exited with {self.proc.returncode} before serving")
            time.sleep(0.02)
        raise RuntimeError("ffmpeg did not start listening")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def fast_reconnect(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("capture: {timeout: 2, stall_timeout: 4, reconnect_initial_delay: 0.2, reconnect_max_delay: 1}\n"
                    "stats_interval: 1\n")
    return path


def test_stream_that_dies_and_returns(tiny_model, fast_reconnect):
    server = StreamServer(free_port())
    daemon = Daemon("--source", server.url, "--model", tiny_model, "--config", fast_reconnect)
    try:
        # Started before the server exists: it waits and retries instead of exiting.
        daemon.wait_for(lambda: daemon.log_count("source lost") >= 1, 15)
        time.sleep(1)
        assert daemon.proc.poll() is None
        server.start()
        t_up = time.monotonic()
        t_first = daemon.wait_for(lambda: len(daemon.predictions_since(t_up)) >= 5, 20)
        assert daemon.log_count("source recovered") == 1

        server.kill()                                   # the server dies mid-run
        t_dead = time.monotonic()
        daemon.wait_for(lambda: daemon.log_count("source lost") >= 2, 15)
        assert daemon.proc.poll() is None
        time.sleep(2)
        server.start()                                  # ... and comes back
        t_back = time.monotonic()
        t_resumed = daemon.wait_for(lambda: len(daemon.predictions_since(t_back)) >= 3, 20)
        assert t_resumed - t_back < 10, "predictions resume within a few seconds of the server's return"
        assert daemon.log_count("source recovered") == 2
        # One warning per loss, not one per retry.
        assert daemon.log_count("source lost") == 2
        assert daemon.stop() == 0
        final = daemon.final_stats()
        assert final["source_reconnects"] == 2
        assert t_first > t_up and t_dead < t_back
    finally:
        server.kill()
        if daemon.proc.poll() is None:
            daemon.proc.kill()


def test_stalled_stream_is_detected_and_reopened(tiny_model, fast_reconnect):
    server = StreamServer(free_port())
    server.start()
    daemon = Daemon("--source", server.url, "--model", tiny_model, "--config", fast_reconnect)
    try:
        daemon.wait_for(lambda: len(daemon.predictions_since(0)) >= 5, 20)
        server.proc.send_signal(signal.SIGSTOP)        # stops sending, connection stays open
        t_stop = time.monotonic()
        t_lost = daemon.wait_for(lambda: daemon.log_count("source lost") + daemon.log_count("source stalled") >= 1, 15)
        assert t_lost - t_stop < 2 + 4 + 2, "detected within the configured timeouts"
        assert daemon.proc.poll() is None
        server.kill()
        server = StreamServer(server.port)
        server.start()
        t_back = time.monotonic()
        daemon.wait_for(lambda: len(daemon.predictions_since(t_back)) >= 3, 20)
        assert daemon.stop() == 0
        final = daemon.final_stats()
        assert final["source_reconnects"] >= 1
    finally:
        server.kill()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
