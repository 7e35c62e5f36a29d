"""Hostile output (issue 15, items 4, 5, 7): what leaves the process is standard JSON, valid UTF-8,
free of credentials and of forged log lines, and a hopeless source neither spins nor floods the log.

Everything is generated here: NaN models built with onnx.helper, a tiny HTTP server playing a camera
with a password, a fake broker that accepts and hangs up, folders of undecodable files.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from harness import MOSQUITTO, Broker, Daemon, Subscriber, daemon_env, free_port, wait_until
from tiny_model import make_channel_model

from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.util.redact import LogSanitizer, display_uri, one_line, printable, redact
from edge_runtime.core.sink import OutputClosed, SinkContext
from edge_runtime.sinks.stdout import OutputError, StdoutSink

STRICT = {"PYTHONIOENCODING": "utf-8:strict"}


def strict_json_lines(raw: bytes) -> list[dict]:
    """Every stdout line: valid UTF-8 and standard JSON (NaN/Infinity are not JSON)."""
    text = raw.decode("utf-8")          # strict: raises on any invalid byte

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} on stdout")
    assert text == "" or text.endswith("\n"), "stdout ends mid-line"
    return [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]


def run_strict(tmp_path: Path, *args, env_extra: dict | None = None, timeout: float = 60):
    """The daemon with a strict UTF-8 stdout; stdout as bytes (so nothing is decoded leniently)."""
    import subprocess
    import sys

    from conftest import REPO, daemon_env
    env = daemon_env(**STRICT, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", *map(os.fsencode, map(str, args))],
                          capture_output=True, timeout=timeout, env=env, cwd=REPO)
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


# --- redaction: one function, table-driven ----------------------------------------------------------

@pytest.mark.parametrize("text, expect", [
    ("rtsp://admin:pa55@cam.lan/stream", "rtsp://***@cam.lan/stream"),
    ("lost: http://u:p@h:80/x delivered no frame", "lost: http://***@h:80/x delivered no frame"),
    ("synthetic://640x480?fps=30", "synthetic://640x480?fps=30"),
    # FFmpeg splits at the LAST '@' of the authority: '@' and ':' may stand in a password unencoded
    ("rtsp://admin:p@ss@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:p@ss:w:rd@10.0.0.9:554/a", "rtsp://***@10.0.0.9:554/a"),
    ("rtsp://admin:p%40ss%3Aw@cam/", "rtsp://***@cam/"),
    ("RTSP://Admin:Secret@CAM/x", "RTSP://***@CAM/x"),
    ("rtsps://a:b@[fe80::1]:322/s", "rtsps://***@[fe80::1]:322/s"),
    ("cannot open 'rtsp://a:b@cam/s'", "cannot open 'rtsp://***@cam/s'"),
    ("two: http://a:1@x/ and rtmp://b:2@y/app", "two: http://***@x/ and rtmp://***@y/app"),
    # userinfo always: a token alone, a percent-encoded pair, a token in the user-name field
    ("rtsp://admin@cam/s", "rtsp://***@cam/s"),
    ("https://ghp_T0KEN123@relay.example/live.m3u8", "https://***@relay.example/live.m3u8"),
    ("http://user%3Apass@cam/x", "http://***@cam/x"),
    ("https://T0KEN:x-oauth-basic@git.example/x", "https://***@git.example/x"),
    ("http://:onlypw@cam/", "http://***@cam/"),
    ("http://cam/snap.cgi?user=admin&password=hunter2&res=1", "http://cam/snap.cgi?user=admin&password=***&res=1"),
    ("http://cam/cgi?usr=a&pwd=hunter2", "http://cam/cgi?usr=a&pwd=***"),
    ("http://cam/cgi?loginuse=a&loginpas=hunter2", "http://cam/cgi?loginuse=a&loginpas=***"),
    ("srt://relay:9000?mode=caller&passphrase=hunter2hunter2", "srt://relay:9000?mode=caller&passphrase=***"),
    ("https://relay/live.m3u8?TOKEN=abc&x=1", "https://relay/live.m3u8?TOKEN=***&x=1"),
    # credential-like names by rule, any case, in the query and in the fragment
    ("https://h/a?auth_token=1&Access_Key=2&CLIENT_SECRET=3&jwt=4&session=5&apitoken=6&fps=30",
     "https://h/a?auth_token=***&Access_Key=***&CLIENT_SECRET=***&jwt=***&session=***&apitoken=***&fps=30"),
    ("https://b.s3.example/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=ab12&"
     "X-Amz-Security-Token=zz", "https://b.s3.example/o?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&"
     "X-Amz-Signature=***&X-Amz-Security-Token=***"),
    ("https://acct.blob.example/c/v.mp4?sv=2020&sp=r&sig=abc%3D", "https://acct.blob.example/c/v.mp4?sv=2020&sp=r&sig=***"),
    ("https://h/live#token=abc&x=1", "https://h/live#token=***&x=1"),
    ("https://h/live#access_token=abc", "https://h/live#access_token=***"),
    ("https://h/?apiKey=1;sessionid=2;PIN=3;pine=4", "https://h/?apiKey=***;sessionid=***;PIN=***;pine=4"),
    ("https://h/?pass%77ord=x", "https://h/?pass%77ord=***"),          # a percent-encoded name is decoded
    ("http://dvr/cgi?u=admin&p=1234&PHPSESSID=ab&hmac_sha=cd", "http://dvr/cgi?u=admin&p=***&PHPSESSID=***&hmac_sha=***"),
    ("https://share.example/file/ID#K3yS3cr3tInFragment", "https://share.example/file/ID#***"),
    ("https://h/clip.mp4#t=10", "https://h/clip.mp4#t=10"),               # a media fragment stays
    ("https://h/?next=http://u:p@x/%3F&a=b?token=t", "https://h/?next=http://***@x/%3F&a=b?token=***"),
    ("/srv/images/a@b:c", "/srv/images/a@b:c"),
    ("no uri here: user:pass@host", "no uri here: user:pass@host"),
])
def test_redact(text, expect):
    assert redact(text) == expect


@pytest.mark.parametrize("uri, secret", [
    ("rtsp://admin:my secret@cam/s", "my secret"),          # FFmpeg takes spaces too
    ("rtsp://admin:a/b@cam/s", None),                       # '/' ends FFmpeg's authority: not a password
    ("http://u:s3cr3t@cam/x?password=other", "s3cr3t"),
    ("HTTP://u:s3cr3t@cam/x", "s3cr3t"),
    ("rtsp://t0ken with space@cam/s", "t0ken with space"),
    ("https://cam/x?password=pw with space&a=1", "pw with space"),
    ("https://cam/x#Session=sp ace s3cr3t", "s3cr3t"),
])
def test_display_uri_treats_the_whole_string_as_one_uri(uri, secret):
    shown = display_uri(uri)
    if secret:
        assert secret not in shown and "***" in shown
    assert "other" not in shown


def test_printable_and_one_line():
    bad = os.fsdecode(b"synthetic://64x64?n=\xff\xfe")
    assert printable(bad) == "synthetic://64x64?n=\ufffd\ufffd"
    assert printable("label \ud800") == "label \ufffd\ufffd\ufffd"       # a lone surrogate from JSON
    assert printable("ok ü") == "ok ü"
    forged = "mobilenet\n2026-01-01 00:00:00 ERROR edge_runtime: disk on fire\x1b[2J"
    shown = one_line(forged)
    assert "\n" not in shown and "\x1b" not in shown and "\\n2026" in shown


def test_log_sanitizer_redacts_and_keeps_one_line(caplog):
    logger = logging.getLogger("edge_runtime.test_hostile")
    handler = logging.Handler()
    seen = []
    handler.emit = lambda record: seen.append(record.getMessage())
    handler.addFilter(LogSanitizer())
    logger.addHandler(handler)
    level, disabled = logger.level, logging.root.manager.disable
    logger.setLevel(logging.INFO)           # whatever an earlier in-process test left on the root logger
    logging.disable(logging.NOTSET)
    try:
        logger.warning("source lost: cannot open %s", "rtsp://a:hunter2@cam/s")
        logger.warning("model: %s", "net\nERROR forged")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logging.disable(disabled)
    assert seen == ["source lost: cannot open rtsp://***@cam/s", "model: net\\nERROR forged"]


def test_rate_limited_by_time():
    now = [0.0]
    rl = RateLimited(10.0, clock=lambda: now[0])
    assert rl.ready() == 0
    assert [rl.ready() for _ in range(50)] == [None] * 50
    now[0] = 10.5
    assert rl.ready() == 50                  # the next message says how many were held back


# --- the stdout sink: only a closed pipe ends the run quietly -----------------------------------

class _Stream:
    def __init__(self, exc: BaseException | None):
        self.exc, self.data = exc, []

    def write(self, text):
        if self.exc is not None:
            raise self.exc
        self.data.append(text)

    def flush(self):
        pass


@pytest.mark.parametrize("live", [False, True])
def test_stdout_sink_closed_pipe_vs_other_errors(live):
    record = {"type": "stats", "x": 1}
    for exc, expect in [(BrokenPipeError(32, "Broken pipe"), OutputClosed),
                        (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), OutputError),
                        (OSError(28, "No space left on device"), OutputError)]:
        sink = StdoutSink(stream=_Stream(exc)).start(SinkContext(live=live))
        with pytest.raises(expect if live else (OutputClosed if expect is OutputClosed else type(exc))):
            sink.stats(record)
            sink.close()
    sink = StdoutSink(stream=_Stream(None)).start(SinkContext(live=live))
    with pytest.raises((ValueError, OutputError)):
        sink.stats({"type": "stats", "bad": float("nan")})      # never written as NaN
        sink.close()


# --- non-finite model outputs -------------------------------------------------------------------

def _nan_model(tmp_path: Path, kind: str) -> Path:
    """The channel model (logits = 10 x channel means) with its logits made non-finite."""
    path = make_channel_model(tmp_path / f"{kind}.onnx")
    model = onnx.load(str(path))
    g = model.graph
    mul = next(n for n in g.node if n.output[0] == "logits")
    mul.output[0] = "pre"
    if kind == "nan":        # a constant NaN added to the logits
        g.initializer.append(numpy_helper.from_array(np.array([np.nan], np.float32), "bad"))
        g.node.append(helper.make_node("Add", ["pre", "bad"], ["logits"]))
    else:                    # division by zero: +inf for a bright channel, NaN for 0/0
        g.initializer.append(numpy_helper.from_array(np.array([0.0], np.float32), "bad"))
        g.node.append(helper.make_node("Div", ["pre", "bad"], ["logits"]))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import cv2
    d = tmp_path_factory.mktemp("images")
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 0, 0)]):
        cv2.imwrite(str(d / f"{i}.png"), np.full((40, 40, 3), colour, np.uint8))
    return d


@pytest.mark.parametrize("kind", ["nan", "div0", "scale"])
def test_a_model_non_finite_on_a_blank_image_is_refused_at_start(tmp_path, images, kind):
    """The start-up blank-image run checks the scores for finiteness: one line, exit 2, no frame spun on."""
    if kind == "scale":       # a sidecar whose output_scale overflows float32 (logits x inf)
        model = make_channel_model(tmp_path / "m.onnx", embed=False)
        (tmp_path / "m.yaml").write_text("input: {size: [32, 32], color: rgb, mean: [0, 0, 0], std: [1, 1, 1]}\n"
                                         "labels: [red, green, blue]\noutput: logits\noutput_scale: 1.0e+300\n")
    else:
        model = _nan_model(tmp_path, kind)
    for extra in ([], ["--validate-config"]):
        rc, out, err = run_strict(tmp_path, "--source", images, "--model", model, *extra)
        assert rc == 2 and out == b"", err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err and "RuntimeWarning" not in err, err
        assert ("blank image" in lines[0] and "NaN or infinity" in lines[0]) or "output_scale" in lines[0], err


def _sqrt_neg_model(tmp_path: Path) -> Path:
    """The channel model with logits = sqrt(-10 x channel means): finite (zero) on a black frame, so it
    passes the start-up check, and NaN on every frame with any colour in it."""
    path = make_channel_model(tmp_path / "sqrtneg.onnx")
    model = onnx.load(str(path))
    g = model.graph
    mul = next(n for n in g.node if n.output[0] == "logits")
    mul.output[0] = "pre"
    g.node.extend([helper.make_node("Neg", ["pre"], ["neg"]), helper.make_node("Sqrt", ["neg"], ["logits"])])
    onnx.save(model, str(path))
    return path


def test_non_finite_results_are_refused_never_published(tmp_path, images):
    model = _sqrt_neg_model(tmp_path)
    rc, out, err = run_strict(tmp_path, "--source", images, "--model", model, "--lanes", "1", "--batch", "1")
    lines = strict_json_lines(out)
    assert rc == 0, err[-2000:]
    preds = [x for x in lines if x["type"] == "prediction"]
    assert [p["path"].rsplit("/", 1)[-1] for p in preds] == ["3.png"]      # only the black one is finite
    final = lines[-1]
    assert final["type"] == "stats" and final["frames_skipped"] == 3 and final["frames_processed"] == 1
    refused = [line for line in err.splitlines() if "refused" in line]
    assert len(refused) == 1 and "NaN or infinity" in refused[0], err      # warned once, not per frame
    assert "RuntimeWarning" not in err


@pytest.mark.parametrize("frames", [1, 5, 40])
def test_max_frames_ends_a_run_where_every_frame_is_refused(tmp_path, frames):
    """--max-frames N and N frames in a row refused: the run ends with one error line, exit 2, and its
    final stats line (it used to spin at full CPU for ever, N never reached)."""
    model = _sqrt_neg_model(tmp_path)
    rc, out, err = run_strict(tmp_path, "--source", "synthetic://64x48", "--model", model,
                              "--max-frames", frames, timeout=120)
    lines = strict_json_lines(out)
    assert rc == 2, err[-2000:]
    assert [x for x in lines if x["type"] == "prediction"] == []
    assert lines[-1]["type"] == "stats" and lines[-1]["frames_processed"] == 0
    assert lines[-1]["frames_skipped"] >= frames
    stop = [line for line in err.splitlines() if "stopping: the last" in line]
    assert len(stop) == 1 and f"--max-frames {frames}" in stop[0] and " ERROR " in stop[0], err
    assert "Traceback" not in err and "RuntimeWarning" not in err


@pytest.mark.parametrize("source", ["synthetic://64x48", "synthetic://64x48?fps=200"])
def test_a_run_where_every_frame_is_refused_says_so_once_and_backs_off(tmp_path, source):
    model = _sqrt_neg_model(tmp_path)
    d = Daemon("--source", source, "--model", model, "--stats-interval", "1")
    try:
        wait_until(lambda: "every frame since frame" in d.stderr(), 30, "the refusal warning")
        time.sleep(2.5)          # the pause reaches its 2 s ceiling
        cpu0, t0 = _cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(3.0)
        cpu = _cpu_seconds(d.proc.pid) - cpu0
        wall = time.monotonic() - t0
        assert d.running()
    finally:
        rc = d.stop()
    err = d.stderr()
    assert rc == 0
    assert cpu < 0.3 * wall, f"{cpu:.2f} s of CPU in {wall:.1f} s: still spinning on refused frames"
    assert err.count("every frame since frame") == 1, err
    assert err.count("refused (") <= 2 and "Traceback" not in err, err     # the per-frame warning: once a minute


def test_non_utf8_uri_and_labels_keep_stdout_valid(tmp_path):
    """A source URI with undecodable bytes and a label with a lone surrogate (a JSON \\ud800 escape in
    the model's metadata): stdout stays valid UTF-8 under a strict encoder, every line is parsed."""
    path = make_channel_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if '"labels"' in prop.value:
            prop.value = prop.value.replace('"red"', '"red\\ud800"')
    onnx.save(model, str(path))
    uri = b"synthetic://32x32?fps=50&note=caf\xe9\xff"
    rc, out, err = run_strict(tmp_path, "--source", os.fsdecode(uri), "--model", path, "--max-frames", "3")
    assert rc == 0, err[-2000:]
    lines = strict_json_lines(out)
    preds = [x for x in lines if x["type"] == "prediction"]
    assert len(preds) == 3 and lines[-1]["type"] == "stats"
    assert preds[0]["source"] == "synthetic://32x32?fps=50&note=caf\ufffd\ufffd"
    assert any(t["label"].startswith("red") for t in preds[0]["top"])


def test_only_a_closed_pipe_ends_the_run_quietly(tmp_path, images):
    """The reader goes away after one line: exit 0, no traceback (the one quiet way out)."""
    import subprocess
    import sys

    from conftest import REPO, daemon_env
    model = make_channel_model(tmp_path / "m.onnx")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "--source", "synthetic://32x32", "--model",
                             str(model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env(**STRICT),
                            cwd=REPO)
    first = proc.stdout.readline()
    assert json.loads(first)["type"] == "prediction"
    proc.stdout.close()
    rc = proc.wait(20)
    err = proc.stderr.read().decode()
    assert rc == 0 and "Traceback" not in err and "output closed by its reader" in err


# --- no secret leaves the process ------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def camera_server(tmp_path_factory):
    """A 'camera': a short MJPEG AVI over HTTP. It ends after 12 frames, so the daemon loses it, logs
    the loss and reconnects: every log line about the source is exercised."""
    import cv2
    d = tmp_path_factory.mktemp("cam")
    writer = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for _ in range(12):
        writer.write(np.full((48, 64, 3), (0, 0, 255), np.uint8))
    writer.release()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(d)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("form, secret", [
    ("http://cam:s3cr3t-pw@127.0.0.1:{port}/clip.avi", "s3cr3t-pw"),
    ("http://cam:p@ss:w0rd-x@127.0.0.1:{port}/clip.avi", "ss:w0rd-x"),          # '@' and ':' in the password
    ("http://127.0.0.1:{port}/clip.avi?user=cam&password=t0p-s3cret", "t0p-s3cret"),
    ("http://T0KEN-0nly-s3cret@127.0.0.1:{port}/clip.avi", "T0KEN-0nly"),       # a token as the userinfo
    ("http://cam%3As3cr3t-enc@127.0.0.1:{port}/clip.avi", "s3cr3t-enc"),       # percent-encoded user:pass
    ("http://127.0.0.1:{port}/clip.avi?X-Amz-Credential=AKIAs3cr3t&X-Amz-Signature=51gs3cr3t", "s3cr3t"),
    ("http://127.0.0.1:{port}/clip.avi?Auth_Token=t0k-s3cr3t&fps=30", "t0k-s3cr3t"),
    ("http://127.0.0.1:{port}/clip.avi#jwt=eyJs3cr3t", "eyJs3cr3t"),            # a fragment parameter
])
def test_no_secret_in_any_output(tmp_path, camera_server, form, secret):
    uri = form.format(port=camera_server)
    model = make_channel_model(tmp_path / "m.onnx")
    http_port = free_port()
    args = ["--source", uri, "--model", model, "--http", f"127.0.0.1:{http_port}", "--stats-interval", "0.5"]
    broker = sub = None
    if MOSQUITTO is not None:
        broker = Broker(tmp_path).start()
        sub = Subscriber(broker.port)
        args += ["--mqtt", f"mqtt://127.0.0.1:{broker.port}/cam"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("capture: {reconnect_initial_delay: 0.1, reconnect_max_delay: 0.2}\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)       # systemd's notify socket
    notify.bind(str(tmp_path / "notify"))
    d = Daemon("--config", cfg, *args, env=daemon_env(NOTIFY_SOCKET=str(tmp_path / "notify")))
    bodies = []
    try:
        wait_until(lambda: len(d.predictions()) >= 1 and "source lost" in d.stderr(), 30,
                   "predictions and a source loss")
        for path in ("/latest", "/stats.json", "/healthz", "/metrics"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=5) as r:
                    bodies.append(r.read().decode())
            except urllib.error.HTTPError as exc:
                bodies.append(exc.read().decode())
        if sub is not None:
            wait_until(lambda: sub.payloads("cam/prediction"), 10, "an MQTT prediction")
    finally:
        try:
            rc = d.stop()
        finally:                    # the broker must not outlive a failed test
            if sub is not None:
                sub.close()
            if broker is not None:
                broker.stop()
    status = []
    notify.setblocking(False)
    while True:
        try:
            status.append(notify.recv(4096).decode())
        except BlockingIOError:
            break
    notify.close()
    assert any("READY=1" in m and "***" in m for m in status), status
    out, err = d.stdout_text(), d.stderr()
    assert d.invalid_utf8 == 0
    preds = [json.loads(line) for line in out.splitlines() if '"prediction"' in line]
    assert rc == 0 and preds, err[-2000:]
    assert all("***" in p["source"] for p in preds)
    assert json.loads(bodies[0])["source"] == preds[0]["source"]
    assert "source: http://" in err and "source lost" in err        # the startup and loss lines exist...
    mqtt = [p.decode() for _, p, _, _ in sub.messages] if sub is not None else []
    for where, text in [("stdout", out), ("stderr", err), ("http", "\n".join(bodies)), ("mqtt", "\n".join(mqtt)),
                        ("systemd", "\n".join(status))]:
        assert secret not in text, f"the secret leaked into {where}"      # ...and none shows it


# --- no busy loop, no log flood -----------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_looping_a_folder_where_nothing_decodes_does_not_spin(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i:02d}.jpg").write_bytes(b"not an image " * (i + 1))
    model = make_channel_model(tmp_path / "m.onnx")
    d = Daemon("--source", folder, "--model", model, "--loop")
    try:
        wait_until(lambda: "ready in" in d.stderr(), 30, "the daemon to start")
        cpu0, t0 = _cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(3.0)
        cpu = _cpu_seconds(d.proc.pid) - cpu0
        wall = time.monotonic() - t0
    finally:
        rc = d.stop()
    err = d.stderr().splitlines()
    assert rc == 0
    assert cpu < 0.3 * wall, f"{cpu:.2f} s of CPU in {wall:.1f} s: a busy loop"
    assert len(err) < 25, "\n".join(err[-30:])
    assert sum("no image in it could be decoded" in line for line in err) == 1     # said once


def test_a_broker_that_accepts_and_hangs_up_is_retried_ever_less_often(tmp_path):
    """CONNACK, then close: paho would start its backoff again at the minimum on every CONNACK."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    accepted: list[float] = []
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            accepted.append(time.monotonic())
            try:
                conn.settimeout(1.0)
                conn.recv(1024)                          # CONNECT
                conn.sendall(b"\x20\x02\x00\x00")        # CONNACK, accepted
                time.sleep(0.05)
            except OSError:
                pass
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    model = make_channel_model(tmp_path / "m.onnx")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mqtt: {reconnect_min_delay: 0.1, reconnect_max_delay: 30}\n")
    d = Daemon("--config", cfg, "--source", "synthetic://32x32?fps=20", "--model", model,
               "--quiet-predictions", "--mqtt", f"mqtt://127.0.0.1:{port}/x")
    try:
        wait_until(lambda: len(accepted) >= 5, 20, "five connection attempts")
        time.sleep(1.0)
    finally:
        rc = d.stop()
        stop.set()
        t.join(2)
        srv.close()
    gaps = np.diff(accepted[:6])
    assert rc == 0
    assert (gaps[1:] > 1.5 * gaps[:-1]).all(), f"attempts not growing apart: {gaps}"
    err = d.stderr()
    assert err.count("lost the connection") <= 1 and err.count("reconnected to") <= 1, err


@pytest.mark.parametrize("uri, secret", [
    ("HTTP://cam:s3cr3t-up@127.0.0.1:{port}/x", "s3cr3t-up"),          # FFmpeg refuses it: retried, logged
    ("rtsp://cam:pw with space-s3cr3t@127.0.0.1:{port}/x", "s3cr3t"),    # nobody listens: retried, logged
    ("rtspx://cam:s3cr3t-x@cam/x", "s3cr3t-x"),                          # unknown scheme: one error line
])
def test_no_secret_when_the_source_never_opens(tmp_path, uri, secret):
    uri = uri.format(port=free_port())
    model = make_channel_model(tmp_path / "m.onnx")
    rc, out, err = run_strict(tmp_path, "--validate-config", "--source", uri, "--model", model)
    text = out.decode() + err
    assert secret not in text and (rc == 2 or "***" in out.decode()), text
    cfg = tmp_path / "c.yaml"
    cfg.write_text("capture: {reconnect_initial_delay: 0.1, reconnect_max_delay: 0.2}\n")
    d = Daemon("--config", cfg, "--source", uri, "--model", model, "--stats-interval", "0.3")
    try:
        wait_until(lambda: not d.running() or "source lost" in d.stderr(), 20, "a loss or an exit")
        time.sleep(0.5 if d.running() else 0)
    finally:
        rc = d.stop()
    out, err = d.stdout_text(), d.stderr()
    assert d.invalid_utf8 == 0
    assert rc in (0, 2) and ("***" in err), err
    assert secret not in out and secret not in err, err


def test_metadata_and_file_names_cannot_forge_log_lines(tmp_path):
    import cv2
    path = make_channel_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "edge_runtime.arch":
            prop.value = "net\nFORGED-ARCH ERROR edge_runtime: disk on fire"
        if '"labels"' in prop.value:
            prop.value = prop.value.replace('"red"', '"red\\nFORGED-LABEL ERROR x"')
    onnx.save(model, str(path))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a\nFORGED-NAME ERROR y.png"), np.full((32, 32, 3), (0, 0, 255), np.uint8))
    rc, out, err = run_strict(tmp_path, "--source", folder, "--model", path, "--log-predictions")
    assert rc == 0, err
    assert "FORGED-ARCH" in err and "FORGED-LABEL" in err and "FORGED-NAME" in err     # logged, escaped:
    assert not any(line.startswith("FORGED") for line in err.splitlines()), err       # no line of its own
    rc, out, err = run_strict(tmp_path, "--validate-config", "--source", folder, "--model", path)
    assert rc == 0 and len(out.decode().splitlines()) == 1 and "FORGED-ARCH" in out.decode()
    preds = strict_json_lines(run_strict(tmp_path, "--source", folder, "--model", path)[1])
    assert preds[0]["top"][0]["label"] == "red\nFORGED-LABEL ERROR x"       # JSON escapes it: data kept as is


def test_a_stream_that_opens_and_ends_at_once_is_not_reopened_in_a_tight_loop(tmp_path):
    """An HTTP 'camera' serving a 3-frame clip: every open works and ends at once. It was reopened ~450
    times a second with two warnings each time; now the pause doubles until a connection lasts."""
    import cv2
    d0 = tmp_path / "srv"
    d0.mkdir()
    writer = cv2.VideoWriter(str(d0 / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), (0, 0, 255), np.uint8))
    writer.release()
    gets = []

    class Counting(_Quiet):
        def do_GET(self):
            gets.append(time.monotonic())
            super().do_GET()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(d0)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    model = make_channel_model(tmp_path / "m.onnx")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("capture: {reconnect_initial_delay: 0.2, reconnect_max_delay: 30}\n")
    d = Daemon("--config", cfg, "--source", f"http://127.0.0.1:{srv.server_address[1]}/clip.avi",
               "--model", model, "--quiet-predictions")
    try:
        wait_until(lambda: gets, 30, "the first GET")
        time.sleep(3.0)
    finally:
        rc = d.stop()
        srv.shutdown()
        srv.server_close()
    err = d.stderr().splitlines()
    assert rc == 0
    assert 2 <= len(gets) <= 6, f"{len(gets)} opens in ~3 s"      # 0.2, 0.4, 0.8, 1.6 s apart
    assert len(err) < 20, "\n".join(err[-30:])


def test_refusal_streak_backs_off_says_so_once_a_minute_and_recovers(caplog):
    """The streak on its own (core/refusals.py): the pause doubles to its ceiling, a passing frame ends
    it, and a model that flaps is not a warning per streak."""
    from edge_runtime.core.refusals import BACKOFF_AFTER, PAUSE_MAX, RefusalStreak

    stop = threading.Event()
    streak = RefusalStreak(stop, max_frames=None)
    why = ValueError("the model's output holds NaN or infinity")
    with caplog.at_level(logging.INFO, logger="edge_runtime.core.pipeline"):
        for _ in range(3):                       # three streaks, a frame passing between them
            for i in range(BACKOFF_AFTER + 10):
                streak.refused(i, why)
            assert streak.pause == PAUSE_MAX and not stop.is_set()
            streak.passed(999)
            assert streak.pause == 0 and streak.in_a_row == 0
    said = [r.getMessage() for r in caplog.records if "every frame since frame" in r.getMessage()]
    assert len(said) == 1 and "frame 0" in said[0]
    assert sum("passes again" in r.getMessage() for r in caplog.records) == 3
    bounded = RefusalStreak(stop, max_frames=3)
    for i in range(3):
        bounded.refused(10 + i, why)
    assert stop.is_set() and "the last 3 frame(s) (from frame 10)" in bounded.gave_up
