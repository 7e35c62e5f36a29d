"""MQTT publishing against a real Mosquitto broker on a free loopback port, read by a real client.

Needs Debian's `mosquitto` package (the broker binary; tests skip without it) and paho-mqtt.
The helpers here (Broker, Subscriber, Daemon, wait_until, free_port) are shared with test_http.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from harness import MOSQUITTO, Broker, Daemon, Subscriber, free_port, needs_mosquitto, wait_until

paho = pytest.importorskip("paho.mqtt.client")

from edge_runtime import config as config_mod  # noqa: E402
from edge_runtime.util.errors import ConfigError, UserError  # noqa: E402
from edge_runtime.sinks.mqtt import (MqttSink, StateTracker, default_prefix, discovery_configs,  # noqa: E402
                                     parse_url, redact)
from edge_runtime.sinks import SinkContext  # noqa: E402
from edge_runtime.sources import Frame  # noqa: E402
from edge_runtime.core.stats import Stats  # noqa: E402

@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("needs the Mosquitto broker: apt-get install mosquitto")
    b = Broker(tmp_path)
    yield b
    b.stop()




@pytest.fixture
def daemons(tmp_path):
    """start(*args) -> Daemon; every daemon still running at the end of the test is killed."""
    started: list[Daemon] = []

    def start(*args, name: str | None = None) -> Daemon:
        d = Daemon(*args)
        started.append(d)
        return d
    yield start
    for d in started:
        d.kill()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- URLs, config, state: no broker needed ---------------------------------------------------------

@pytest.mark.parametrize("url, expect", [
    ("mqtt://broker.lan", dict(tls=False, host="broker.lan", port=1883, username=None, password=None)),
    ("mqtt://broker.lan:1884/home/cam1", dict(port=1884, prefix="home/cam1")),
    ("mqtts://broker.lan/x", dict(tls=True, port=8883, prefix="x")),
    ("mqtt://ha:s3cr%40t@10.0.0.2/cams/front/", dict(username="ha", password="s3cr@t", host="10.0.0.2",
                                                     prefix="cams/front")),
    ("mqtt://user@host", dict(username="user", password=None)),
    ("MQTT://[::1]:1999", dict(host="::1", port=1999)),
])
def test_parse_url(url, expect):
    got = parse_url(url)
    for key, value in expect.items():
        assert getattr(got, key) == value, key
    if "prefix" not in expect:
        assert got.prefix == default_prefix() and got.prefix.startswith("edge_runtime/")
    assert "s3cr" not in got.redacted()


@pytest.mark.parametrize("url, message", [
    ("http://u:hunter2@host/x", "expected mqtt://"),
    ("mqtt://u:hunter2@/x", "host is missing"),
    ("mqtt://u:hunter2@host:99999/x", "port"),
    ("mqtt://u:hunter2@host/a/+/b", "wildcards"),
    ("mqtt://u:hunter2@host/a/%23", "wildcards"),
    ("mqtt://u:hunter2@host/a/#", "no ?query or #fragment"),
    ("mqtt://u:hunter2@host/a?qos=1", "no ?query"),
])
def test_bad_urls_are_refused_by_name_without_the_password(url, message):
    with pytest.raises(ConfigError) as info:
        config_mod.load(None, {"mqtt.url": url}, {"mqtt.url": "--mqtt"})
    text = str(info.value)
    assert message in text and "--mqtt" in text and "hunter2" not in text


def test_mqtt_and_publish_config_sections(tmp_path):
    cfg = config_mod.load(str(write_config(tmp_path / "c.yaml", """
mqtt: {url: "mqtts://b/p", ca_file: ca.pem, qos: 1, homeassistant: true, max_queued: 10}
publish: {threshold: 0.8, min_frames: 5}
""")))
    assert cfg.mqtt.qos == 1 and cfg.mqtt.homeassistant and cfg.mqtt.discovery_prefix == "homeassistant"
    assert cfg.publish.threshold == 0.8 and cfg.publish.min_frames == 5
    for bad, key in [("mqtt: {qos: 3}", "mqtt.qos"), ("mqtt: {url: 'mqtt://b', ca_file: x}", "mqtt.ca_file"),
                     ("publish: {threshold: 1.5}", "publish.threshold"), ("mqtt: {max_queued: 0}", "mqtt.max_queued"),
                     ("mqtt: {reconnect_min_delay: 5, reconnect_max_delay: 1}", "mqtt.reconnect_max_delay"),
                     ("mqtt: {colour: red}", "mqtt.colour")]:
        with pytest.raises(ConfigError) as info:
            config_mod.load(str(write_config(tmp_path / "bad.yaml", bad)))
        assert info.value.key == key, bad


def test_state_changes_only_after_min_frames_above_threshold():
    t = StateTracker(threshold=0.6, min_frames=3)
    feed = [("cat", 0.9), ("cat", 0.9), ("cat", 0.9), ("cat", 0.95), ("dog", 0.9), ("dog", 0.5), ("dog", 0.9),
            ("dog", 0.9), ("dog", 0.9), ("cat", 0.9), ("cat", 0.9), ("dog", 0.9), ("cat", 0.7), ("cat", 0.7),
            ("cat", 0.7)]
    changes = [(i, label) for i, (label, score) in enumerate(feed) if t.update(label, score)]
    # cat after 3 frames; a low score restarts the count for dog; cat-cat-dog does not flip; cat again is no change
    assert changes == [(2, "cat"), (8, "dog"), (14, "cat")]
    assert t.current == "cat"


def test_redact_hides_passwords_in_any_uri():
    assert redact("rtsp://admin:pa55@cam.lan/stream") == "rtsp://***@cam.lan/stream"
    assert redact("lost: http://u:p@h:80/x delivered no frame") == "lost: http://***@h:80/x delivered no frame"
    assert redact("synthetic://640x480?fps=30") == "synthetic://640x480?fps=30"


HA_REQUIRED = {"name", "unique_id", "state_topic", "availability_topic", "device", "origin"}


def check_ha_sensor(topic: str, cfg: dict, *, prefix: str, node_id: str, stats_line: dict | None = None) -> None:
    """What Home Assistant's MQTT sensor discovery needs (homeassistant/components/mqtt/sensor.py schema)."""
    import re

    parts = topic.split("/")
    assert len(parts) == 5 and parts[0] == "homeassistant" and parts[1] == "sensor" and parts[4] == "config"
    assert parts[2] == node_id
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", parts[2]) and re.fullmatch(r"[a-zA-Z0-9_-]+", parts[3])
    assert HA_REQUIRED <= set(cfg), topic
    assert cfg["availability_topic"] == f"{prefix}/availability"
    assert cfg.get("payload_available", "online") == "online"
    assert cfg.get("payload_not_available", "offline") == "offline"
    assert cfg["state_topic"].startswith(prefix + "/") and not set("#+") & set(cfg["state_topic"])
    device = cfg["device"]
    assert isinstance(device["identifiers"], list) and device["identifiers"] and device["model"] == "edge_runtime"
    assert device["sw_version"] and device["name"]
    assert cfg["origin"]["name"] == "edge_runtime"
    if "device_class" in cfg:
        assert cfg["device_class"] in {"temperature", "duration"} and cfg["unit_of_measurement"] in {"°C", "ms"}
    if "state_class" in cfg:
        assert cfg["state_class"] == "measurement"
    if "entity_category" in cfg:
        assert cfg["entity_category"] in {"diagnostic", "config"}
    if "value_template" in cfg and stats_line is not None:
        import jinja2           # installed by --dev (requirements-dev.txt)
        value = jinja2.Environment().from_string(cfg["value_template"]).render(value_json=stats_line)
        assert value == "None" or float(value) >= 0, (cfg["value_template"], value)   # "None" -> HA unknown


def test_discovery_configs_are_valid():
    configs = discovery_configs("edge_runtime/pi", "cam1", "homeassistant", "edge_runtime pi")
    assert {t.split("/")[3] for t in configs} == {"label", "fps", "inference_ms", "cpu_temp"}
    line = Stats().snapshot()
    for topic, cfg in configs.items():
        check_ha_sensor(topic, json.loads(json.dumps(cfg)), prefix="edge_runtime/pi", node_id="cam1", stats_line=line)
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    label = configs["homeassistant/sensor/cam1/label/config"]
    assert label["json_attributes_topic"] == "edge_runtime/pi/state/attributes"


def test_discovery_configs_with_regions():
    """With regions: a sensor per region instead of the whole frame's label, and an MQTT image entity per
    region (image_topic: the JPEG bytes of its last event; Home Assistant wants image_topic or url_topic)."""
    configs = discovery_configs("edge_runtime/pi", "cam1", "homeassistant", "edge_runtime pi", ("door", "feeder"))
    sensors = {t: c for t, c in configs.items() if t.startswith("homeassistant/sensor/")}
    assert {t.split("/")[3] for t in sensors} == {"region_door", "region_feeder", "fps", "inference_ms", "cpu_temp"}
    for topic, cfg in sensors.items():
        check_ha_sensor(topic, json.loads(json.dumps(cfg)), prefix="edge_runtime/pi", node_id="cam1")
    assert sensors["homeassistant/sensor/cam1/region_door/config"]["state_topic"] == "edge_runtime/pi/door/state"
    image = configs["homeassistant/image/cam1/region_door/config"]
    assert (image["image_topic"], image["content_type"]) == ("edge_runtime/pi/door/snapshot", "image/jpeg")
    assert image["availability_topic"] == "edge_runtime/pi/availability" and image["device"]["model"] == "edge_runtime"
    assert len(configs) == 7 and len({c["unique_id"] for c in configs.values()}) == 7


# --- the sink in-process ------------------------------------------------------------------------

class _Cfg:
    """A config.MqttConfig with test-friendly timings."""

    def __new__(cls, url: str, **kw):
        base = dict(reconnect_min_delay=0.2, reconnect_max_delay=1.0, keepalive=5)
        base.update(kw)
        return config_mod.MqttConfig(url=url, **base)


def _record(i: int, label: str = "red", score: float = 0.99) -> dict:
    return {"type": "prediction", "frame": i, "ts": 1.0 + i, "source": "synthetic://64x64",
            "top": [{"index": 0, "label": label, "score": score}],
            "latency_ms": {"preprocess": 0.1, "inference": 0.2, "total": 0.4}}


FRAME = Frame(image=np.zeros((8, 8, 3), np.uint8), index=0, ts=0.0, mono=0.0)


def test_black_holed_broker_costs_a_bounded_queue(caplog):
    """A broker that accepts TCP but never answers: predictions are queued (bounded), the oldest dropped and counted."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)          # the kernel completes the handshake; nobody ever reads or answers
    stats = Stats()
    sink = MqttSink(_Cfg(f"mqtt://u:topsecret@127.0.0.1:{hole.getsockname()[1]}/t", max_queued=50),
                    config_mod.PublishConfig(threshold=0.5, min_frames=1)).start(SinkContext(stats=stats))
    try:
        for i in range(3000):
            sink.prediction(_record(i), FRAME)
        sink.stats(stats.snapshot())
        assert len(sink._queue) == 50
        assert sink.dropped == 3000 + 1 + 1 - 50          # predictions + one state change + one stats line
        expected = {"connected": False, "sent": 0, "dropped": sink.dropped, "queued": 50}
        wait_until(lambda: stats.snapshot()["mqtt"] == expected, 3, "the counters in the stats line")
    finally:
        t0 = time.monotonic()
        sink.close()
        hole.close()
    assert time.monotonic() - t0 < 4.0
    assert "topsecret" not in caplog.text


def test_tls_with_password_and_a_refused_login(tmp_path, caplog):
    if MOSQUITTO is None:
        pytest.skip("needs the Mosquitto broker: apt-get install mosquitto")
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd (apt-get install openssl mosquitto)")
    d = tmp_path
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, timeout=30, cwd=d)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    run("mosquitto_passwd", "-b", "-c", "passwd", "cam", "p@ss:word")
    os.chmod(d / "passwd", 0o644)
    for name in ("server.key", "server.pem", "ca.pem"):
        os.chmod(d / name, 0o644)           # mosquitto may drop privileges
    port = free_port()
    broker = Broker(d, port, listener=f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                                      f"password_file {d / 'passwd'}\ncafile {d / 'ca.pem'}\n"
                                      f"certfile {d / 'server.pem'}\nkeyfile {d / 'server.key'}\n").start()
    sub = sink = bad = None
    try:
        sub = Subscriber(port, "tls/#", tls_ca=str(d / "ca.pem"), auth=("cam", "p@ss:word"))
        stats = Stats()
        # ca_file relative to the config file's folder (resolved when the config is loaded)
        (d / "edge.yaml").write_text(f"mqtt:\n  url: mqtts://cam:p%40ss%3Aword@127.0.0.1:{port}/tls/cam\n"
                                     "  ca_file: ca.pem\n  qos: 1\n  reconnect_min_delay: 0.2\n"
                                     "  reconnect_max_delay: 1.0\n  keepalive: 5\n")
        loaded = config_mod.load(str(d / "edge.yaml"))
        assert loaded.mqtt.ca_file == str(d / "ca.pem")
        sink = MqttSink(loaded.mqtt, config_mod.PublishConfig()).start(SinkContext(stats=stats))
        wait_until(lambda: sub.payloads("tls/cam/availability") == [b"online"], 10, "online over TLS")
        sink.prediction(_record(7), FRAME)
        got = wait_until(lambda: sub.payloads("tls/cam/prediction"), 10, "a prediction over TLS")
        assert json.loads(got[0])["frame"] == 7
        wait_until(lambda: sink.sent == 1 and not sink._window, 5, "the broker's PUBACK (QoS 1)")
        # A wrong password: refused, logged once however often it retries, never shown.
        bad = MqttSink(_Cfg(f"mqtts://cam:WRONGPASS@127.0.0.1:{port}/tls/bad", ca_file=str(d / "ca.pem"),
                            client_id="bad"), config_mod.PublishConfig()).start(SinkContext())
        wait_until(lambda: "refused the connection" in caplog.text, 10, "the refusal to be logged")
        time.sleep(1.5)       # a few more retries (0.2 s, 0.4 s, 0.8 s)
        assert caplog.text.count("refused the connection") == 1
        assert "WRONGPASS" not in caplog.text and "p@ss" not in caplog.text and "word@" not in caplog.text
        assert not bad._connected
    finally:
        for s in (sink, bad):
            if s is not None:
                s.close()
        if sub is not None:
            sub.close()
        broker.stop()
    with pytest.raises(UserError, match="ca_file"):
        MqttSink(_Cfg("mqtts://127.0.0.1:1/x", ca_file=str(d / "missing.pem")), config_mod.PublishConfig()).start(
            SinkContext())
    os.mkfifo(d / "fifo.pem")
    with pytest.raises(UserError, match="ca_file .*fifo.pem: cannot load it: is a named pipe"):
        MqttSink(_Cfg("mqtts://127.0.0.1:1/x", ca_file=str(d / "fifo.pem")), config_mod.PublishConfig()).start(
            SinkContext())


# --- the daemon end to end ------------------------------------------------------------------------

@needs_mosquitto
def test_daemon_publishes_every_topic_discovery_and_last_will(broker, daemons, channel_model, video_file, tmp_path):
    """All sinks at once (stdout, MQTT, HTTP). A video cycling red/green/blue, paced and looped."""
    broker.start()
    sub = Subscriber(broker.port)
    http_port = free_port()
    cfg = write_config(tmp_path / "cfg.yaml", f"""
mqtt:
  url: mqtt://127.0.0.1:{broker.port}/test/cam1
  client_id: cam1
  homeassistant: true
  keepalive: 5
publish: {{threshold: 0.9, min_frames: 3}}
http: {{listen: "127.0.0.1:{http_port}"}}
""")
    d = daemons("--config", cfg, "--source", video_file, "--loop", "--realtime", "--model", channel_model,
                "--stats-interval", "1")
    try:
        p = "test/cam1"
        wait_until(lambda: len(sub.payloads(f"{p}/stats")) >= 2 and len(sub.payloads(f"{p}/state")) >= 4,
                   30, "stats and several state changes")
        assert d.running()

        assert sub.payloads(f"{p}/availability")[0] == b"online"
        # The prediction payload is the stdout line, byte for byte.
        stdout = {json.loads(line)["frame"]: line.rstrip("\n") for line in d.raw_lines()
                  if line.startswith('{"type":"prediction"')}
        mqtt_preds = sub.payloads(f"{p}/prediction")
        matched = [m for m in mqtt_preds if json.loads(m)["frame"] in stdout
                   and stdout[json.loads(m)["frame"]] == m.decode()]
        assert len(matched) >= 10 and len(mqtt_preds) >= len(matched)
        # State: the label, only on changes (10 frames per colour, min_frames 3), with its score as attributes.
        states = [s.decode() for s in sub.payloads(f"{p}/state")]
        assert set(states) <= {"red", "green", "blue"}
        assert all(a != b for a, b in zip(states, states[1:], strict=False)), states
        assert len(states) * 5 < len(mqtt_preds)
        attributes = [json.loads(a) for a in sub.payloads(f"{p}/state/attributes")]
        n = min(len(attributes), len(states))
        assert [a["label"] for a in attributes[:n]] == states[:n]
        assert all(a["score"] >= 0.9 for a in attributes)
        stats = [json.loads(s) for s in sub.payloads(f"{p}/stats")]
        assert stats[-1]["type"] == "stats" and stats[-1]["mqtt"]["connected"] is True
        assert stats[-1]["frames_processed"] > 0
        # Home Assistant discovery, checked against what HA's sensor schema requires.
        discovery = {t: json.loads(pl) for t, pl, _, _ in list(sub.messages) if t.startswith("homeassistant/sensor/")}
        assert sorted(t.split("/")[3] for t in discovery) == ["cpu_temp", "fps", "inference_ms", "label"]
        for topic, payload in discovery.items():
            check_ha_sensor(topic, payload, prefix=p, node_id="cam1", stats_line=stats[-1])
        # Home Assistant restarts (its birth message): the discovery configs are sent again.
        before = len([m for m in sub.messages if m[0].startswith("homeassistant/sensor/")])
        sub.client.publish("homeassistant/status", "online", qos=1)
        wait_until(lambda: len([m for m in sub.messages if m[0].startswith("homeassistant/sensor/")]) >= before + 4,
                   10, "discovery again after Home Assistant's birth message")
        # HTTP beside it sees the same data.
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/latest", timeout=5) as r:
            assert json.loads(r.read())["type"] == "prediction"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
            assert "edge_runtime_mqtt_connected 1.0" in r.read().decode()

        # A client arriving later gets the retained topics: availability, state and discovery.
        late = Subscriber(broker.port)
        try:
            wait_until(lambda: len([m for m in late.messages if m[2]]) >= 7, 10, "retained messages")
            retained = {t: pl for t, pl, r, _ in list(late.messages) if r}
            assert retained[f"{p}/availability"] == b"online"
            assert retained[f"{p}/state"].decode() in {"red", "green", "blue"}
            assert json.loads(retained[f"{p}/state/attributes"])["score"] >= 0.9
            assert len([t for t in retained if t.startswith("homeassistant/sensor/cam1/")]) == 4
            assert not any(t.endswith("/prediction") or t.endswith("/stats") for t in retained)
        finally:
            late.close()

        # Killed without a goodbye: the broker publishes the Last Will.
        killed_at = time.monotonic()
        d.proc.kill()
        d.proc.wait(5)
        wait_until(lambda: b"offline" in sub.payloads(f"{p}/availability", since=killed_at), 10, "the last will")
    finally:
        sub.close()


@needs_mosquitto
def test_broker_absent_lost_and_back(broker, daemons, channel_model, tmp_path):
    """Started before the broker; the broker then stops and comes back. Inference and stdout never pause."""
    cfg = write_config(tmp_path / "cfg.yaml", f"""
mqtt:
  url: mqtt://127.0.0.1:{broker.port}/test/cam2
  reconnect_min_delay: 0.2
  reconnect_max_delay: 1
  max_queued: 20
  keepalive: 5
""")
    d = daemons("--config", cfg, "--source", "synthetic://160x120?fps=30", "--model", channel_model,
                "--stats-interval", "1")
    sub = None
    try:
        wait_until(lambda: "cannot reach broker" in d.stderr(), 20, "the first connection failure to be logged")
        n0 = len(d.predictions())
        time.sleep(1.5)
        assert d.running() and len(d.predictions()) > n0 + 20          # ~30 fps to stdout meanwhile

        broker.start()
        sub = Subscriber(broker.port)
        wait_until(lambda: sub.payloads("test/cam2/prediction"), 10, "predictions once the broker is up")

        broker.stop()
        wait_until(lambda: "lost the connection" in d.stderr(), 10, "the loss to be logged")
        n1 = len(d.predictions())
        time.sleep(1.5)
        assert d.running() and len(d.predictions()) > n1 + 20

        back = time.monotonic()
        broker.start()
        wait_until(lambda: b"online" in sub.payloads("test/cam2/availability", since=back)
                   and sub.payloads("test/cam2/prediction", since=back), 15, "reconnection")
        wait_until(lambda: "reconnected to" in d.stderr(), 5, "the reconnect to be logged")
        stopped = time.monotonic()
        assert d.stop() == 0
        wait_until(lambda: b"offline" in sub.payloads("test/cam2/availability", since=stopped), 5,
                   "offline on a clean exit")
    finally:
        if sub is not None:
            sub.close()
    err = d.stderr()
    # Each loss and each recovery logged once, however many retries happened in between.
    assert err.count("cannot reach broker") == 1 and err.count("mqtt: connected to") == 1
    assert err.count("lost the connection") == 1 and err.count("reconnected to") == 1
    final = d.lines()[-1]
    assert final["type"] == "stats" and final.get("final") is True
    assert final["mqtt"]["dropped"] > 20 and final["mqtt"]["sent"] > 0
    assert final["frames_processed"] > 100
