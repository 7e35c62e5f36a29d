"""HTTP: real requests on loopback for every endpoint, and the live page rendered in headless Chromium.

Chromium (Debian's `chromium`; the test skips without it) is driven over the DevTools protocol on a
pipe (--remote-debugging-pipe): no extra Python package, no debugging port.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from harness import CHROMIUM, Chromium, Daemon, Dom, free_port, get, wait_until

from edge_runtime import config as config_mod
from edge_runtime.util.errors import ConfigError, UserError
from edge_runtime.web import http as http_mod
from edge_runtime.web.http import HttpSink, parse_listen
from edge_runtime.sinks import SinkContext
from edge_runtime.sources import Frame
from edge_runtime.core.stats import Stats

def parse_metrics(text: str) -> dict:
    """name -> family, through prometheus_client's parser, and through Prometheus' own promtool if installed."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    return families


def sample(families: dict, family: str, name: str | None = None, **labels) -> float:
    for s in families[family].samples:
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{name or family} {labels}")


# --- address parsing and config ------------------------------------------------------------------

@pytest.mark.parametrize("text, expect", [
    ("8080", ("127.0.0.1", 8080)), (":8080", ("127.0.0.1", 8080)), ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)), ("[::1]:8080", ("::1", 8080)), ("pi.local:80", ("pi.local", 80)),
])
def test_parse_listen(text, expect):
    assert parse_listen(text) == expect


@pytest.mark.parametrize("text", ["", "http", "127.0.0.1:", "1.2.3.4:99999", "::1:8080", "[::1]8080"])
def test_bad_listen_addresses_are_refused_by_flag_name(text):
    with pytest.raises(ConfigError) as info:
        config_mod.load(None, {"http.listen": text}, {"http.listen": "--http"})
    assert "--http" in str(info.value) and "PORT" in str(info.value)


def test_busy_port_is_a_clear_user_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            HttpSink(config_mod.HttpConfig(listen=f"127.0.0.1:{port}")).start(SinkContext())


# --- the sink in-process -------------------------------------------------------------------------

def _record(i: int) -> dict:
    return {"type": "prediction", "frame": i, "ts": 1.0 + i, "source": "rtsp://admin:hunter2@cam/stream",
            "top": [{"index": 2, "label": "red", "score": 0.97}, {"index": 0, "label": "blue", "score": 0.03}],
            "latency_ms": {"preprocess": 1.5, "inference": 12.0, "total": 20.0}}


@pytest.fixture
def sink():
    stats = Stats()
    health = {"healthy": True, "status": "ok", "reason": None, "source_connected": True, "last_frame_age_s": 0.01}
    s = HttpSink(config_mod.HttpConfig(listen="127.0.0.1:0", mjpeg_fps=5, max_connections=3)).start(SinkContext(
        stats=stats, model_info={"path": "m.onnx", "arch": "test", "weights": "w", "input": "224x224", "labels": "3"},
        health=lambda unhealthy_after: health))
    s.base = f"http://127.0.0.1:{s.address[1]}"
    s.fake_health = health
    yield s
    s.close()


def test_every_endpoint_in_process(sink):
    base = sink.base
    assert get(base + "/latest")[0] == 503 and get(base + "/snapshot.jpg")[0] == 503
    canvas = np.zeros((240, 2 * 320, 3), np.uint8)
    canvas[:, :, 2] = 220                                   # red in BGR
    for i in range(100):
        sink.prediction(_record(i), Frame(image=canvas[:, i:i + 320], index=i, ts=0.0, mono=0.0))  # a strided view
    assert sink.frames_encoded == 0                        # nobody asked for an image: nothing encoded
    sink.stats(dict(Stats().snapshot(), fps={"capture": 30.0, "inference": 29.5}))

    status, headers, body = get(base + "/latest")
    latest = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert latest["frame"] == 99 and latest["top"][0]["label"] == "red"
    assert latest["source"] == "rtsp://***@cam/stream"           # no password on the network

    status, headers, body = get(base + "/snapshot.jpg")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and image.shape == (240, 320, 3)
    assert abs(float(image[..., 2].mean()) - 220) < 8 and image[..., :2].mean() < 8
    assert sink.frames_encoded == 1

    status, headers, body = get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    sink.fake_health.update(healthy=False, status="source_lost", reason="source lost for 31 s: rtsp://a:b@c/ gone")
    status, headers, body = get(base + "/healthz")
    assert status == 503 and json.loads(body)["reason"] == "source lost for 31 s: rtsp://***@c/ gone"

    status, headers, body = get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(body.decode())
    assert sample(m, "edge_runtime_inference_latency_seconds", "edge_runtime_inference_latency_seconds_count") == 100
    assert sample(m, "edge_runtime_inference_latency_seconds", "edge_runtime_inference_latency_seconds_bucket",
                  le="0.01") == 0
    assert sample(m, "edge_runtime_inference_latency_seconds", "edge_runtime_inference_latency_seconds_bucket",
                  le="0.015") == 100
    assert sample(m, "edge_runtime_end_to_end_latency_seconds", "edge_runtime_end_to_end_latency_seconds_sum") \
        == pytest.approx(2.0)
    assert sample(m, "edge_runtime_fps", stage="inference") == 29.5
    assert sample(m, "edge_runtime_healthy") == 0 and sample(m, "edge_runtime_source_up") == 1
    assert sample(m, "edge_runtime_model_info", arch="test", input="224x224") == 1
    assert sample(m, "process_resident_memory_bytes") > 1e6
    for counter in ("frames_captured", "frames_processed", "frames_dropped", "source_reconnects"):
        assert m[f"edge_runtime_{counter}"].type == "counter"

    status, _, body = get(base + "/stats.json")
    live = json.loads(body)
    assert status == 200 and live["frames"] == 100 and live["latency_ms"]["inference"] == 12.0
    assert "cpu_temp_c" in live and live["stats"]["fps"]["inference"] == 29.5

    status, headers, body = get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert '<img id="view"' in page and "/stream.mjpg" in page and 'src="/static/live.js"' in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    for path, kind in (("/static/live.js", "text/javascript"), ("/static/live.css", "text/css")):
        status, headers, asset = get(base + path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and asset, path
        page += asset.decode()
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page   # self-contained

    assert get(base + "/nope")[0] == 404


def test_mjpeg_stream_is_rate_limited_and_stops_with_its_viewer(sink):
    frames = [np.full((120, 160, 3), (i * 40) % 256, np.uint8) for i in range(8)]
    stop = threading.Event()

    def feed():        # a 50 fps camera
        i = 0
        while not stop.is_set():
            sink.prediction(_record(i), Frame(image=frames[i % 8], index=i, ts=0.0, mono=0.0))
            i += 1
            time.sleep(0.02)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: sink._latest is not None, 5, "the first frame")
        conn = socket.create_connection(("127.0.0.1", sink.address[1]), timeout=5)
        conn.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
        data, t0 = b"", time.monotonic()
        while time.monotonic() - t0 < 1.6:
            data += conn.recv(1 << 16)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"200" in head.split(b"\r\n")[0] and b"multipart/x-mixed-replace; boundary=frame" in head
        parts = body.split(b"--frame\r\n")[1:]
        assert 4 <= len(parts) <= 12                  # 5 fps for 1.6 s, not 50 fps
        for part in parts[:-1]:
            headers, _, jpeg = part.partition(b"\r\n\r\n")
            assert b"Content-Type: image/jpeg" in headers
            assert cv2.imdecode(np.frombuffer(jpeg.rstrip(b"\r\n"), np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
        assert sink.stream_clients == 1
        conn.close()
        wait_until(lambda: sink.stream_clients == 0, 5, "the stream to notice its viewer left")
        encoded = sink.frames_encoded
        time.sleep(0.5)
        assert sink.frames_encoded == encoded          # nobody watching: no encoding
    finally:
        stop.set()
        feeder.join(2)


def test_clients_that_never_read_block_nothing(sink, monkeypatch):
    """Stuck MJPEG viewers hold only their own thread until the socket timeout; extra clients get a quick 503."""
    monkeypatch.setattr(http_mod._Handler, "timeout", 1.0)
    noise = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), np.uint8)     # ~3 MB JPEGs
    calls = [0]
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            sink.prediction(_record(calls[0]), Frame(image=noise, index=calls[0], ts=0.0, mono=0.0))
            calls[0] += 1
            time.sleep(0.01)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    stuck = []
    try:
        for _ in range(2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", sink.address[1]))
            s.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")       # and never read
            stuck.append(s)
        wait_until(lambda: sink.stream_clients == 2, 5, "two stuck viewers")
        n = calls[0]
        status, _, body = get(sink.base + "/latest")     # the third of max_connections=3
        assert status == 200 and json.loads(body)["top"][0]["label"] == "red"
        wait_until(lambda: sink._server.active == 2, 5, "the request's thread to finish")
        with socket.create_connection(("127.0.0.1", sink.address[1]), timeout=5) as a, \
                socket.create_connection(("127.0.0.1", sink.address[1]), timeout=5) as b:
            a.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            wait_until(lambda: sink.stream_clients == 3, 5, "a third viewer")
            b.sendall(b"GET /latest HTTP/1.0\r\n\r\n")
            assert b.recv(100).startswith(b"HTTP/1.0 503")               # over the limit: refused at once
        wait_until(lambda: sink.stream_clients == 0, 20, "the stuck viewers to time out")
        assert get(sink.base + "/healthz")[0] == 200
        assert calls[0] > n                                # the "inference loop" never waited on them
    finally:
        stop.set()
        feeder.join(2)
        for s in stuck:
            s.close()


# --- the daemon end to end ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def red_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("red") / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for i in range(10):
        frame = np.zeros((480, 640, 3), np.uint8)
        frame[:] = (20, 20, 220)
        cv2.putText(frame, f"edge_runtime {i}", (40, 250), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def live_daemon(tmp_path_factory, channel_model, red_video):
    """The daemon on a looping red video (10 fps, paced) with --http; the channel model says "red"."""
    port = free_port()
    d = Daemon("--source", red_video, "--loop", "--realtime", "--model",
               channel_model, "--http", f"127.0.0.1:{port}", "--stats-interval", "1")
    d.base = f"http://127.0.0.1:{port}"

    def ready():
        assert d.running(), d.stderr()
        try:
            return get(d.base + "/latest", timeout=1)[0] == 200
        except OSError:
            return False
    try:
        wait_until(ready, 30, "the daemon's first prediction over HTTP")
        yield d
    finally:
        code = d.stop()
        assert code == 0, d.stderr()


def test_daemon_endpoints(live_daemon):
    base = live_daemon.base
    status, _, body = get(base + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["healthy"] and health["source_connected"] and health["last_frame_age_s"] < 5

    status, _, body = get(base + "/latest")
    latest = json.loads(body)
    assert status == 200 and latest["top"][0]["label"] == "red" and latest["source"].endswith("red.avi")
    wait_until(lambda: any(p["frame"] == latest["frame"] and p["ts"] == latest["ts"]
                           for p in live_daemon.predictions()), 5, "the same prediction on stdout")

    wait_until(lambda: b"edge_runtime_fps{" in get(base + "/metrics")[2], 10, "a stats interval")
    status, _, body = get(base + "/metrics")
    m = parse_metrics(body.decode())
    assert sample(m, "edge_runtime_frames_processed", "edge_runtime_frames_processed_total") > 0
    assert sample(m, "edge_runtime_frames_captured", "edge_runtime_frames_captured_total") > 0
    assert sample(m, "edge_runtime_frames_dropped", "edge_runtime_frames_dropped_total") >= 0
    assert sample(m, "edge_runtime_source_reconnects", "edge_runtime_source_reconnects_total") == 0
    assert sample(m, "edge_runtime_inference_latency_seconds", "edge_runtime_inference_latency_seconds_count") > 0
    assert sample(m, "edge_runtime_end_to_end_latency_seconds", "edge_runtime_end_to_end_latency_seconds_count") > 0
    assert 5 < sample(m, "edge_runtime_fps", stage="inference") < 15           # the video's 10 fps
    assert sample(m, "edge_runtime_model_info", arch="channel-means test net", input="32x32", labels="3") == 1
    assert sample(m, "edge_runtime_healthy") == 1 and sample(m, "edge_runtime_source_up") == 1
    assert sample(m, "edge_runtime_resident_memory_bytes") > 1e6
    if "edge_runtime_cpu_temperature_celsius" in m:                         # absent where the board has none
        assert 0 < sample(m, "edge_runtime_cpu_temperature_celsius") < 120

    status, headers, body = get(base + "/snapshot.jpg")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and image.shape == (480, 640, 3)
    assert image[..., 2].mean() > 150 and image[..., 1].mean() < 80        # red


PROBE = """JSON.stringify({label: (document.querySelector('#labels .name') || {}).textContent || null,
  fps: document.getElementById('fps').textContent, size: document.getElementById('view').dataset.size || null,
  points: document.getElementById('fpsmax').textContent})"""


def test_live_page_renders_in_chromium(live_daemon, tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    browser = Chromium(tmp_path)
    try:
        session = browser.open(live_daemon.base + "/", 1280, 800)
        def rendered():
            probe = browser.evaluate(session, PROBE)
            v = json.loads(probe) if probe else {}
            return v.get("label") and v.get("size") and v.get("fps") not in (None, "–", "0.0") and v.get("points")
        wait_until(rendered, 30, "the page to render a frame, labels and FPS", interval=0.25)
        time.sleep(1.2)            # one more poll: a second chart point
        dom_html = browser.evaluate(session, "document.documentElement.outerHTML")
        png = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
    finally:
        browser.close()
    (tmp_path / "live-dom.html").write_text(dom_html)
    (tmp_path / "live.png").write_bytes(png)

    dom = Dom(dom_html)
    names = [e["text"] for e in dom.select("name", inside="labels")]
    scores = [e["text"] for e in dom.select("score", inside="labels")]
    fills = [e["attrs"]["style"] for e in dom.select("fill", inside="labels")]
    assert names == ["red", "green", "blue"]
    assert float(scores[0].rstrip("%")) > 90 and "width: 9" in fills[0]
    assert 5 < float(dom.by_id("fps")["text"]) < 15                            # the video's 10 fps
    assert float(dom.by_id("latency")["text"]) > 0 and float(dom.by_id("total")["text"]) > 0
    temp = dom.by_id("temp")["text"]
    assert temp == "n/a" or temp.endswith("°C")
    view = dom.by_id("view")
    assert view["attrs"]["data-size"] == "640x480" and "/stream.mjpg" in view["attrs"]["src"]
    assert dom.by_id("health")["text"] == "healthy"
    assert "640×480" in dom.by_id("viewinfo")["text"]

    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shot.shape == (800, 1280, 3)
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    red = (r > 170) & (g < 80) & (b < 80)
    assert red.mean() > 0.15                     # the camera image is on screen, not only in the DOM


def test_healthz_goes_503_when_the_source_is_lost(tmp_path, channel_model):
    dead = free_port()                            # nothing listens there
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"http: {{listen: '127.0.0.1:{port}', unhealthy_after: 1}}\n"
                   "capture: {reconnect_initial_delay: 0.2, reconnect_max_delay: 0.5}\n")
    d = Daemon("--config", cfg, "--source", f"http://cam:hunter2@127.0.0.1:{dead}/stream.mjpg",
               "--model", channel_model)
    base = f"http://127.0.0.1:{port}"
    try:
        def unhealthy():
            assert d.running(), d.stderr()
            try:
                status, _, body = get(base + "/healthz", timeout=1)
            except OSError:
                return None
            return (status, json.loads(body)) if status == 503 else None
        status, health = wait_until(unhealthy, 30, "/healthz to report the lost source")
        assert health["status"] == "source_lost", health
        assert not health["healthy"] and not health["source_connected"] and health["source_lost_for_s"] > 0
        assert health["reason"].startswith("source lost for") and "hunter2" not in health["reason"]
        m = parse_metrics(get(base + "/metrics")[2].decode())
        assert sample(m, "edge_runtime_healthy") == 0 and sample(m, "edge_runtime_source_up") == 0
        assert sample(m, "edge_runtime_source_losses", "edge_runtime_source_losses_total") == 1
        assert get(base + "/latest")[0] == 503 and get(base + "/snapshot.jpg")[0] == 503
        assert "hunter2" not in get(base + "/stats.json")[2].decode()
    finally:
        code = d.stop()
    assert code == 0


def test_pipeline_health_states():
    """health.assess(): every state /healthz can report."""
    from edge_runtime.core.health import Observed, assess

    now = time.perf_counter()
    cap = SimpleNamespace(connected=True, lost_since=None, lost_reason="")
    p = SimpleNamespace(last_processed_mono=None, started_mono=now, error=None, stop=threading.Event())

    def health():
        return assess(Observed(now=now, started=p.started_mono, last_processed=p.last_processed_mono,
                               lost_since=cap.lost_since, lost_reason=cap.lost_reason, source_connected=cap.connected,
                               frames_processed=0, error=p.error, stopped=p.stop.is_set()), 30.0)
    assert health()["status"] == "starting" and health()["healthy"]
    p.started_mono = now - 31
    assert health()["status"] == "no_frames" and not health()["healthy"]
    p.last_processed_mono = now - 0.1
    assert health()["status"] == "ok" and health()["healthy"] and health()["last_frame_age_s"] < 5
    cap.connected, cap.lost_since, cap.lost_reason = False, now - 5, "camera unplugged"
    assert health()["healthy"]                                   # a short glitch is not unhealthy
    cap.lost_since = now - 40
    h = health()
    assert h["status"] == "source_lost" and "camera unplugged" in h["reason"] and not h["source_connected"]
    cap.connected, cap.lost_since = True, None
    p.last_processed_mono = now - 45
    assert health()["status"] == "stalled"
    p.last_processed_mono = now
    p.error = RuntimeError("onnxruntime: bad input\nmore")
    h = health()
    assert h["status"] == "error" and h["reason"].endswith("RuntimeError: onnxruntime: bad input") and not h["healthy"]
    p.error = None
    p.stop.set()
    assert health()["status"] == "stopped" and not health()["healthy"]
