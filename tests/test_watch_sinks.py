"""Regions through the outputs people use: one real daemon (the tiled two-photo clip, paced and looped,
two regions, snapshots) publishing to a real Mosquitto broker and serving HTTP, read by a real MQTT
client, by HTTP requests and by headless Chromium rendering the live page."""

from __future__ import annotations

import base64
import http.client
import json

import cv2
import numpy as np
import pytest

from harness import Daemon, free_port, wait_until
from harness import CHROMIUM, Chromium, Dom, get
from test_mqtt import MOSQUITTO, Broker, Subscriber, check_ha_sensor
from test_watch import DOOR_BOX, FEEDER_BOX, model_path, write_clip

pytestmark = pytest.mark.slow
PREFIX = "test/cam1"


@pytest.fixture(scope="module")
def watched(fixtures, tmp_path_factory):
    """(daemon, broker subscriber, snapshot folder, base URL, broker port): the daemon runs while the
    module's tests do."""
    if MOSQUITTO is None:
        pytest.skip("needs the Mosquitto broker: apt-get install mosquitto")
    folder = tmp_path_factory.mktemp("watched")
    clip = write_clip(fixtures, folder / "tiled.avi", frames=10)
    broker = Broker(folder).start()
    sub = Subscriber(broker.port)
    port = free_port()
    cfg = folder / "edge.yaml"
    cfg.write_text(f"""
model: {model_path(fixtures)}
regions:
  - {{name: feeder, box: {FEEDER_BOX}}}
  - {{name: door, box: {DOOR_BOX}}}
snapshots: {{dir: snaps}}
mqtt: {{url: "mqtt://127.0.0.1:{broker.port}/{PREFIX}", client_id: cam1, homeassistant: true}}
http: {{listen: "127.0.0.1:{port}"}}
""")
    d = Daemon("--config", cfg, "--source", clip, "--loop", "--realtime", "--stats-interval", "1")
    try:
        # The door changes twice a loop (hot dog -> owl, and back when the clip restarts).
        wait_until(lambda: not d.running() or len(sub.payloads(f"{PREFIX}/event")) >= 4, 30, "four events")
        assert d.running(), d.stderr()
        yield d, sub, folder / "snaps", f"http://127.0.0.1:{port}", broker.port
    finally:
        code = d.stop()
        sub.close()
        broker.stop()
    assert code == 0, d.stderr()


def test_mqtt_per_region_state_events_snapshots_and_discovery(watched, fixtures):
    d, sub, snaps, _, broker_port = watched
    events = [json.loads(p) for p in sub.payloads(f"{PREFIX}/event")]
    stdout_events = [x for x in d.lines() if x["type"] == "event"]
    assert events == stdout_events[:len(events)]                     # the stdout line, as JSON
    assert {e["region"] for e in events} == {"feeder", "door"}
    assert [e["region"] for e in events].count("feeder") == 1        # the bird never changes
    assert not any(retain for t, _, retain, _ in sub.messages if t == f"{PREFIX}/event")
    assert sub.payloads(f"{PREFIX}/state") == []                     # with regions: per region only
    preds = [json.loads(p) for p in sub.payloads(f"{PREFIX}/prediction")]
    assert {p["region"] for p in preds} == {"feeder", "door"}

    wait_until(lambda: sub.payloads(f"{PREFIX}/door/snapshot"), 10, "the door's snapshot image")
    late = Subscriber(broker_port)                      # a client arriving later: the retained topics
    try:
        wait_until(lambda: {f"{PREFIX}/door/snapshot", f"{PREFIX}/feeder/snapshot",
                            "homeassistant/image/cam1/region_door/config"} <= {t for t, _, r, _ in late.messages if r},
                   10, "retained per-region topics")
        retained = {t: p for t, p, r, _ in list(late.messages) if r}
    finally:
        late.close()
    feeder_state = retained[f"{PREFIX}/feeder/state"].decode()
    assert feeder_state == next(e["to"] for e in events if e["region"] == "feeder")
    assert retained[f"{PREFIX}/door/state"].decode() in {e["to"] for e in events if e["region"] == "door"}
    attributes = json.loads(retained[f"{PREFIX}/door/state/attributes"])
    assert attributes["label"] == retained[f"{PREFIX}/door/state"].decode() and attributes["snapshot"]
    image = cv2.imdecode(np.frombuffer(retained[f"{PREFIX}/door/snapshot"], np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (384, 1024, 3)
    assert (snaps / attributes["snapshot"]).exists()

    sensors = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/sensor/")}
    assert sorted(t.split("/")[3] for t in sensors) == ["cpu_temp", "fps", "inference_ms", "region_door",
                                                        "region_feeder"]
    for topic, cfg in sensors.items():
        check_ha_sensor(topic, cfg, prefix=PREFIX, node_id="cam1")
    door = sensors["homeassistant/sensor/cam1/region_door/config"]
    assert door["state_topic"] == f"{PREFIX}/door/state"
    assert door["json_attributes_topic"] == f"{PREFIX}/door/state/attributes"
    images = {t: json.loads(p) for t, p in retained.items() if t.startswith("homeassistant/image/")}
    assert sorted(images) == ["homeassistant/image/cam1/region_door/config",
                              "homeassistant/image/cam1/region_feeder/config"]
    for topic, cfg in images.items():
        # Home Assistant's MQTT image: image_topic (raw image bytes) with its content_type, not url_topic.
        name = topic.split("/")[3].removeprefix("region_")
        assert cfg["image_topic"] == f"{PREFIX}/{name}/snapshot" and cfg["content_type"] == "image/jpeg"
        assert "url_topic" not in cfg and cfg["unique_id"] == f"cam1_region_{name}_snapshot"
        assert cfg["device"] == door["device"] and cfg["availability_topic"] == f"{PREFIX}/availability"


def raw_get(base: str, path: str) -> int:
    """The status of a request for `path` sent as written (urllib would normalise the dots away)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_http_events_and_snapshots(watched, tmp_path):
    d, _, snaps, base, _ = watched
    status, headers, body = get(base + "/events")
    events = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert len(events) >= 4 and [e["frame"] for e in events] == sorted((e["frame"] for e in events), reverse=True)
    shot = next(e["snapshot"] for e in events if e["snapshot"] and (snaps / e["snapshot"]).exists())
    status, headers, body = get(base + "/snapshots/" + shot)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == (snaps / shot).read_bytes()

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not yours")
    (snaps / "20990101T000000Z_door_link.jpg").symlink_to(secret)    # a name of ours, pointing outside
    for path in ["/snapshots/../edge.yaml", "/snapshots/..%2fedge.yaml", "/snapshots/%2e%2e%2fedge.yaml",
                 "/snapshots/../../../../etc/passwd", "/snapshots/" + str(secret), "/snapshots//etc/passwd",
                 "/snapshots/20990101T000000Z_door_link.jpg", "/snapshots/", "/snapshots/" + shot + "%00"]:
        assert raw_get(base, path) == 404, path
    status, _, body = get(base + "/stats.json")
    regions = json.loads(body)["regions"]
    assert [(r["name"], r["box"]) for r in regions] == [("feeder", FEEDER_BOX), ("door", DOOR_BOX)]
    assert all(r["state"] and r["label"] for r in regions)
    metrics = get(base + "/metrics")[2].decode()
    assert 'edge_runtime_region_state_changes_total{region="feeder"} 1.0' in metrics
    assert 'edge_runtime_region_frames_total{region="door"}' in metrics
    assert 'edge_runtime_region_frames_refused_total{region="door"} 0.0' in metrics
    assert "edge_runtime_snapshots_written_total" in metrics


def test_live_page_shows_region_boxes_and_events(watched, tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    _, _, _, base, _ = watched
    browser = Chromium(tmp_path)
    probe = """JSON.stringify({boxes: [...document.querySelectorAll('#boxes .region')].map((b) =>
      ({name: b.dataset.region, text: b.textContent, rect: b.getBoundingClientRect().toJSON()})),
      view: document.getElementById('view').getBoundingClientRect().toJSON(),
      thumbs: [...document.querySelectorAll('#events .event img')].map((i) => [i.getAttribute('src'), i.naturalWidth]),
      events: [...document.querySelectorAll('#events .event .what')].map((e) => e.textContent)})"""
    try:
        session = browser.open(base + "/", 1280, 800)

        def rendered():
            v = json.loads(browser.evaluate(session, probe) or "{}")
            return v if len(v.get("boxes", [])) == 2 and v["events"] and all(w > 0 for _, w in v["thumbs"]) \
                and v["view"]["height"] > 100 else None
        view = wait_until(rendered, 30, "region boxes and events with thumbnails on the page", interval=0.25)
        png = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"])
        html = browser.evaluate(session, "document.documentElement.outerHTML")
    finally:
        browser.close()
    (tmp_path / "live.png").write_bytes(png)
    feeder, door = view["boxes"]
    assert feeder["name"] == "feeder" and door["name"] == "door"
    assert feeder["text"].startswith("feeder: chickadee") and door["text"].startswith("door: ")
    img = view["view"]
    # The boxes sit over the picture where the config puts them: the door is the right half.
    assert door["rect"]["x"] == pytest.approx(img["x"] + img["width"] / 2, abs=3)
    assert door["rect"]["width"] == pytest.approx(img["width"] / 2, abs=3)
    assert door["rect"]["height"] == pytest.approx(img["height"], abs=3)
    assert any(text.startswith("door: ") and "→" in text for text in view["events"])
    assert all(src.startswith("/snapshots/") for src, _ in view["thumbs"])
    assert Dom(html).by_id("health")["text"] == "healthy"
