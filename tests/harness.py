"""The one test harness: paths, the real daemon as a subprocess (run to the end, or started and watched),
free ports and polling. Fixtures live in conftest.py; everything here is plain functions and classes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGE_FIXTURES", REPO.parent / "shared" / "fixtures"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def daemon_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


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


def run_daemon(*args: str, timeout: float = 60, env: dict | None = None, cwd: Path | None = None) -> DaemonResult:
    """Run the daemon to its end."""
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or daemon_env(), cwd=cwd or REPO)
    return DaemonResult(proc.returncode, proc.stdout, proc.stderr)


def start_daemon(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """The daemon with its stdout/stderr as text pipes (the caller reads them)."""
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or daemon_env(), cwd=REPO, **kwargs)


class Daemon:
    """A running daemon whose stdout and stderr lines are collected, with their arrival times, by
    reader threads (so no pipe can fill up and block it)."""

    def __init__(self, *args, env: dict | None = None):
        self.proc = start_daemon(*map(str, args), env=env)
        self.out: list[tuple[float, str]] = []      # raw stdout lines, "\n" included
        self.err: list[tuple[float, str]] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list) -> None:
        for line in stream:
            into.append((time.monotonic(), line))

    def raw_lines(self) -> list[str]:
        return [line for _, line in list(self.out) if line.endswith("\n")]

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.raw_lines() if line.strip()]

    def predictions(self) -> list[dict]:
        return [x for x in self.lines() if x["type"] == "prediction"]

    def predictions_since(self, t: float) -> list[dict]:
        return [x for ts, line in list(self.out) if ts >= t and line.strip()
                for x in [json.loads(line)] if x["type"] == "prediction"]

    def stderr(self) -> str:
        return "".join(line for _, line in list(self.err))

    def log_count(self, text: str) -> int:
        return sum(text in line for _, line in list(self.err))

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, what, timeout: float) -> float:
        """Poll `what()` while the daemon runs; the time it became true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return time.monotonic()
            assert self.running(), "daemon exited:\n" + self.stderr()[-3000:]
            time.sleep(0.05)
        raise AssertionError("timed out; log:\n" + self.stderr()[-3000:])

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM; the exit code (fails the test if it does not stop in time)."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"the daemon did not stop within {timeout} s of SIGTERM:\n{self.stderr()[-3000:]}")
        for t in self._readers:
            t.join(2)
        return code

    def final_stats(self) -> dict:
        return [x for x in self.lines() if x["type"] == "stats"][-1]

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait(5)
