"""The one test harness: paths, the real daemon as a subprocess (run to the end, or started and watched),
free ports and polling. Fixtures live in conftest.py; everything here is plain functions and classes."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
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
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env or daemon_env(), cwd=REPO)
        self.out: list[tuple[float, str]] = []      # stdout lines, "\n" included
        self.err: list[tuple[float, str]] = []
        self.invalid_utf8 = 0                       # lines that were not valid UTF-8 (shown with U+FFFD)
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._readers:
            t.start()

    def _read(self, stream, into: list) -> None:
        for raw in stream:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.invalid_utf8 += 1
                line = raw.decode("utf-8", "replace")
            into.append((time.monotonic(), line))

    def stdout_text(self) -> str:
        return "".join(line for _, line in list(self.out))

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


# --- a real MQTT broker and subscriber ---------------------------------------------------------

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")
                                               if os.path.exists(p)), None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None,
                                     reason="needs the Mosquitto broker: apt-get install mosquitto")


class Broker:
    """A Mosquitto process on 127.0.0.1:port (persistence off). Can be stopped and started again."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "", listener: str | None = None):
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text((listener or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
                             + "persistence false\n" + extra
                             # as root, mosquitto would switch to user mosquitto, who cannot read pytest's tmp dirs
                             + ("user root\n" if os.geteuid() == 0 else ""))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        log = open(self.workdir / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()

        def accepting():
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {(self.workdir / f'mosquitto-{self.port}.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_until(accepting, 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Subscriber:
    """A real MQTT client subscribed to `topic`, recording (topic, payload, retain, time)."""

    def __init__(self, port: int, topic: str = "#", *, tls_ca: str | None = None,
                 auth: tuple[str, str] | None = None, host: str = "127.0.0.1"):
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.connected = threading.Event()
        c = mqtt_client().Client(mqtt_client().CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        if tls_ca:
            c.tls_set(ca_certs=tls_ca)
        if auth:
            c.username_pw_set(*auth)

        def on_connect(client, userdata, flags, rc, props=None):
            if not rc.is_failure:
                client.subscribe(topic, qos=1)       # again after every reconnect
                self.connected.set()

        c.on_connect = on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = lambda client, userdata, m: self.messages.append(
            (m.topic, m.payload, bool(m.retain), time.monotonic()))
        c.reconnect_delay_set(0.1, 0.5)
        c.connect_async(host, port)
        c.loop_start()
        self.client = c
        wait_until(self.connected.is_set, 10, "the test subscriber to connect")
        time.sleep(0.1)        # the SUBACK

    def payloads(self, topic: str, since: float = 0.0) -> list[bytes]:
        return [p for t, p, _, at in list(self.messages) if t == topic and at >= since]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_client():
    import paho.mqtt.client as paho
    return paho


# --- HTTP and headless Chromium -----------------------------------------------------------------

BASH = shutil.which("bash") or "/bin/bash"     # moves the pipe ends to fds 3 and 4 (dash cannot name fds > 9)
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)


def get(url: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Dom(HTMLParser):
    """Just enough of a DOM to query a serialised page: elements with attributes, text and ancestors."""

    VOID = {"img", "br", "meta", "link", "input", "hr", "source"}

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[dict] = []
        self._stack: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "ancestors": list(self._stack)}
        self.elements.append(el)
        if tag not in self.VOID:
            self._stack.append(el)

    def handle_endtag(self, tag):
        while self._stack:
            if self._stack.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self._stack:
            el["text"] += data

    def by_id(self, ident: str) -> dict:
        return next(e for e in self.elements if e["attrs"].get("id") == ident)

    def select(self, cls: str, inside: str) -> list[dict]:
        return [e for e in self.elements if cls in e["attrs"].get("class", "").split()
                and any(a["attrs"].get("id") == inside for a in e["ancestors"])]


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe (fd 3 commands, fd 4 replies, NUL-separated JSON)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--remote-debugging-pipe"]

    def __init__(self, workdir: Path):
        self.profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()
        script = f'exec "$0" "$@" 3<&{cmd_r} 4>&{resp_w}'
        with open(workdir / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen([BASH, "-c", script, CHROMIUM, *self.FLAGS,
                                          f"--user-data-dir={self.profile}", "about:blank"],
                                         pass_fds=(cmd_r, resp_w), stdout=log, stderr=log, start_new_session=True)
        os.close(cmd_r)
        os.close(resp_w)
        self._buf = b""
        self._id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 20):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
            if select.select([self._resp_r], [], [], left)[0]:
                chunk = os.read(self._resp_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium exited")
                self._buf += chunk

    def open(self, url: str, width: int, height: int) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session)
        # Page.navigate answers before the page is there: until it commits, the tab is still about:blank,
        # whose document is complete and has a body. A test acting on it then (a form submitted) would
        # race the navigation. Wait until the page at `url` has been parsed (not `complete`: a live page's
        # MJPEG stream never finishes loading).
        expected = json.dumps(url.split("#")[0])
        deadline = time.monotonic() + 30
        while not self.evaluate(session, f"location.href === {expected} && document.readyState !== 'loading'"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not load {url} within 30 s")
            time.sleep(0.05)
        return session

    def evaluate(self, session: str, expression: str):
        """The expression's value, or None while it throws (e.g. the page is still loading) or while the tab
        navigates (a form's POST answered with a new document: Chromium refuses to evaluate in between)."""
        try:
            reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        except RuntimeError as exc:
            if "navigated or closed" in str(exc):
                return None
            raise
        return None if "exceptionDetails" in reply else reply["result"].get("value")

    def close(self) -> None:
        for fd in (self._cmd_w, self._resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)      # chromium and its helper processes: our own group
            self.proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)
