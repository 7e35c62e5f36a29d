"""Teach from the page, over HTTP on 127.0.0.1 against the real daemon: POST /train trains a region on its
pictures in http.collect_dir with the fixture's float MobileNetV2 as the backbone, the taught model is
deployed by the reload path while the video plays, the region answers with the new labels; a cross-site
POST is refused; a failing training leaves the running model, the state and the dataset untouched; after a
restart the taught model is still in use and the log says so; rollback goes back, to the previous taught
model, then to the config's. The config file is never rewritten. The page itself: tests/test_teach_page.py.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.watch.regions import crop
from harness import FIXTURES, MOSQUITTO, Broker, Daemon, Subscriber, free_port
from test_train import bin_scene

BACKBONE = FIXTURES / "models" / "mobilenet_v2_1.0_224_float.onnx"
BOX = (0.0, 0.15, 0.5, 0.7)     # the left half, where the chip bag is or is not
NEW = {"empty", "full"}
pytestmark = pytest.mark.skipif(not BACKBONE.exists(), reason="fixtures not available")


def make_video(path: Path, frames: int = 31, fps: float = 5.0, seed: int = 7, block: int = 1) -> Path:
    """Full and empty scenes in turn, each under its own lighting and jitter: the region's picture changes.
    31 frames at 5 fps: the page's sampler (once a second, 5 frames on) comes round to every one of them."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(bin_scene((i // block) % 2 == 0, rng))
    writer.release()
    return path


def make_dataset(root: Path, per_label: int = 6, seed: int = 11, region: str = "bin") -> None:
    """Region crops as POST /collect names them (REGION_YYYYmmdd-HHMMSS.mmm_NNNN.jpg)."""
    rng = np.random.default_rng(seed)
    for label, full in (("empty", False), ("full", True)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            image = np.ascontiguousarray(crop(bin_scene(full, rng), BOX))
            assert cv2.imwrite(str(root / label / f"{region}_20261204-1200{i:02d}.000_{i + 1:04d}.jpg"), image)


def write_config(tmp_path: Path, video: Path, data: Path, port: int, *, realtime: bool = True, threads: int = 2,
                 model=BACKBONE) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""source: {video}
loop: true
realtime: {"true" if realtime else "false"}
model: {model}
threads: {threads}
quiet_predictions: true
http:
  listen: 127.0.0.1:{port}
  collect_dir: {data}
regions:
  - name: bin
    box: {list(BOX)}
""")
    return path


def request(url: str, method: str = "GET", headers: dict | None = None, timeout: float = 10):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def jget(url: str) -> dict:
    status, body = request(url)
    assert status == 200, (status, body)
    return json.loads(body)


def region_label(base: str) -> str | None:
    try:
        regions = jget(base + "/stats.json")["regions"]
    except (OSError, AssertionError):
        return None
    return regions[0]["label"] if regions else None


def wait_trained(base: str, daemon: Daemon, state: str, timeout: float = 120) -> dict:
    return daemon.wait_for(lambda: jget(base + "/train")["state"] == state, timeout) and jget(base + "/train")


def dataset_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def test_train_deploy_fail_restart_and_roll_back(tmp_path):
    video = make_video(tmp_path / "scene.avi")
    data = tmp_path / "dataset"
    make_dataset(data)
    port = free_port()
    config = write_config(tmp_path, video, data, port)
    config_text = config.read_bytes()
    base = f"http://127.0.0.1:{port}"
    state_file = data / ".taught" / "taught.json"

    daemon = Daemon("--config", config)
    try:
        daemon.wait_for(lambda: region_label(base), 60)
        imagenet = region_label(base)
        assert imagenet not in NEW
        assert jget(base + "/train")["state"] == "idle"

        # Another site's page cannot start a training.
        status, body = request(base + "/train?region=bin", "POST", {"Origin": "http://evil.example"})
        assert status == 403 and b"cross-site" in body
        status, _ = request(base + "/train?region=nope", "POST")
        assert status == 400
        assert jget(base + "/train")["state"] == "idle" and not state_file.exists()

        status, body = request(base + "/train?region=bin", "POST", {"Origin": base})
        assert status == 202 and json.loads(body)["state"] == "running"
        status, body = request(base + "/train?region=bin", "POST")
        assert status == 409 and b"running" in body
        done = wait_trained(base, daemon, "done")
        assert done["region"] == "bin" and done["progress"] == 1.0 and done["error"] is None
        assert done["labels"] == ["empty", "full"] and done["images"] == 12
        assert done["accuracy"] >= 0.9 and set(done["per_class"]) == NEW
        assert np.array(done["confusion"]).sum() == 12
        # Deployed by the reload path: the region answers with its new labels, the video never stopped.
        daemon.wait_for(lambda: region_label(base) in NEW, 30)
        assert daemon.log_count("taught model for region bin: ") >= 1
        first = json.loads(state_file.read_text())["regions"]["bin"]
        assert len(first) == 1 and (data / ".taught" / first[0]["file"]).is_file()
        frames = jget(base + "/stats.json")["frames"]
        daemon.wait_for(lambda: jget(base + "/stats.json")["frames"] > frames + 2, 20)

        # A failing training (a picture OpenCV cannot read): failed with the reason, nothing else changes.
        bad = data / "full" / "bin_20261204-130000.000_0099.jpg"
        bad.write_bytes(b"not a jpeg at all")
        before_state, before_data = state_file.read_bytes(), dataset_files(data)
        status, _ = request(base + "/train?region=bin", "POST")
        assert status == 202
        failed = wait_trained(base, daemon, "failed")
        assert "cannot decode image" in failed["error"] and "bin_20261204-130000.000_0099.jpg" in failed["error"]
        assert state_file.read_bytes() == before_state and dataset_files(data) == before_data
        assert [p.name for p in data.iterdir() if p.name.startswith(".train")] == []
        assert region_label(base) in NEW and daemon.log_count("teach: training region bin failed") == 1
        bad.unlink()

        # A second training: the first model is kept for a rollback.
        status, _ = request(base + "/train?region=bin", "POST")
        assert status == 202
        wait_trained(base, daemon, "done")
        second = json.loads(state_file.read_text())["regions"]["bin"]
        assert [e["file"] for e in second][:1] == [first[0]["file"]] and len(second) == 2
    finally:
        assert daemon.stop() == 0

    # After a restart the taught model is still in use, and the log says which, in one line.
    daemon = Daemon("--config", config)
    try:
        daemon.wait_for(lambda: region_label(base) in NEW, 60)
        lines = [line for _, line in daemon.err if "taught model for region bin: " in line]
        assert len(lines) == 1, daemon.stderr()
        assert second[1]["file"] in lines[0] and "labels empty, full" in lines[0] and "12 images" in lines[0]
        assert "accuracy" in lines[0]

        # Roll back: to the first taught model, then to the config's model; then there is nothing left.
        status, body = request(base + "/train/rollback?region=bin", "POST", {"Origin": "http://evil.example"})
        assert status == 403
        status, body = request(base + "/train/rollback?region=bin", "POST")
        assert status == 200 and json.loads(body)["now"] == first[0]["file"], body
        assert [e["file"] for e in json.loads(state_file.read_text())["regions"]["bin"]] == [first[0]["file"]]
        assert not (data / ".taught" / second[1]["file"]).exists()
        assert region_label(base) in NEW
        status, body = request(base + "/train/rollback?region=bin", "POST")
        assert status == 200 and json.loads(body)["now"] is None
        daemon.wait_for(lambda: region_label(base) not in NEW, 30)
        status, body = request(base + "/train/rollback?region=bin", "POST")
        assert status == 409 and b"nothing to roll back" in body
    finally:
        assert daemon.stop() == 0
    assert config.read_bytes() == config_text, "the config file is never rewritten"
    assert dataset_files(data) == {k: v for k, v in before_data.items() if "0099" not in k}


def test_the_gallery_api_moves_deletes_and_labels_candidates(tmp_path):
    """The page's own calls, without a browser: candidates appear while the picture changes, are labelled in
    bulk; pictures are listed by page, moved and deleted; hostile names are refused."""
    video = make_video(tmp_path / "scene.avi")
    data = tmp_path / "dataset"
    make_dataset(data, per_label=3)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon("--config", write_config(tmp_path, video, data, port))
    try:
        daemon.wait_for(lambda: region_label(base), 60)
        daemon.wait_for(lambda: len(jget(base + "/teach/api/candidates?region=bin")["items"]) >= 4, 60)
        items = jget(base + "/teach/api/candidates?region=bin")["items"]
        status, body = request(base + "/teach/candidate?region=bin&id=%d&full=1" % items[0]["id"])
        full = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert status == 200 and full.shape[:2] == (168, 160)        # the region's crop at the source's size
        status, page = request(base + "/teach")
        assert status == 200 and b"teach.js" in page and b"cdn" not in page.lower()
        with urllib.request.urlopen(base + "/teach", timeout=10) as r:      # the live page's strict policy
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert b"<script>" not in page and b"style=" not in page                 # nothing inline to allow

        chosen = [str(i["id"]) for i in items[:3]]
        status, body = request(base + "/teach/api/assign?region=bin&to=empty&" + "&".join(f"id={i}" for i in chosen),
                               "POST", {"Origin": "http://evil.example"})
        assert status == 403
        status, body = request(base + "/teach/api/assign?region=bin&to=empty&" + "&".join(f"id={i}" for i in chosen),
                               "POST")
        assert status == 200 and len(json.loads(body)["saved"]) == 3 and json.loads(body)["images"] == 6
        left = {i["id"] for i in jget(base + "/teach/api/candidates?region=bin")["items"]}
        assert not left & {int(i) for i in chosen}
        overview = jget(base + "/teach/api/overview?region=bin")
        assert {lab["name"]: lab["count"] for lab in overview["labels"]} == {"empty": 6, "full": 3}
        assert overview["minimum"] == 2 and overview["recommended"] == 10

        pictures = jget(base + "/teach/api/pictures?region=bin&label=empty&page=0")
        assert pictures["total"] == 6 and len(pictures["names"]) == 6
        status, thumb = request(base + "/teach/thumb?region=bin&label=empty&name=" + pictures["names"][0])
        assert status == 200 and thumb[:2] == b"\xff\xd8"
        status, _ = request(base + "/teach/thumb?region=bin&label=empty&name=../../config.yaml")
        assert status in (400, 404)
        status, _ = request(base + "/teach/api/move?region=bin&from=empty&to=../x&name=" + pictures["names"][0], "POST")
        assert status == 400
        status, body = request(base + "/teach/api/move?region=bin&from=empty&to=full&name=" + pictures["names"][0],
                               "POST")
        assert status == 200 and json.loads(body)["moved"] == 1
        assert (data / "full" / pictures["names"][0]).is_file()
        status, body = request(base + "/teach/api/delete?region=bin&from=full&name=" + pictures["names"][0], "POST")
        assert status == 200 and json.loads(body)["deleted"] == 1
        assert not (data / "full" / pictures["names"][0]).exists()
        status, _ = request(base + "/teach/api/labels?add=lid_open", "POST")
        assert status == 200 and (data / "lid_open").is_dir()
        status, _ = request(base + "/teach/api/labels?add=..", "POST")
        assert status == 400
        overview = jget(base + "/teach/api/overview?region=bin")
        assert {lab["name"]: lab["count"] for lab in overview["labels"]} == {"empty": 5, "full": 3, "lid_open": 0}
        assert jget(base + "/teach/api/candidates?region=bin")["max"] == 48

        # Hostile requests: one clear error each, nothing touched.
        before = dataset_files(data)
        many = "&".join(f"name=bin_20261204-120000.000_{i:04d}.jpg" for i in range(300))
        for url, method, want in (
                (f"/teach/api/delete?region=bin&from=empty&{many}", "POST", 400),      # > 200 at once
                ("/teach/api/delete?region=bin&from=empty&name=gate_20261204-120000.000_0001.jpg", "POST", 400),
                ("/teach/api/delete?region=bin&from=empty&name=.hidden.jpg", "POST", 400),
                ("/teach/api/delete?region=bin&from=/etc&name=bin_20261204-120000.000_0001.jpg", "POST", 400),
                ("/teach/api/assign?region=bin&to=empty&id=x", "POST", 400),
                ("/teach/api/assign?region=bin&to=empty&id=999999", "POST", 200),     # gone: 0 saved
                ("/teach/candidate?region=bin&id=999999", "GET", 404),
                ("/teach/api/pictures?region=bin&label=empty&page=-5", "GET", 200),
                ("/teach/api/pictures?region=bin&label=empty&label=full", "GET", 400),
                ("/teach/api/overview?region=../bin", "GET", 400),
                ("/teach/nothing", "GET", 404),
                ("/train/nothing", "POST", 404)):
            status, body = request(base + url, method)
            assert status == want, (url, status, body)
            assert b"Traceback" not in body and json.loads(body)
        assert dataset_files(data) == before
    finally:
        code = daemon.stop()
        assert code == 0, daemon.stderr()[-3000:]


def test_the_whole_frame_without_regions(tmp_path):
    """No regions: the page teaches the whole frame (no ?region=), the top-level model is replaced."""
    video = make_video(tmp_path / "scene.avi")
    data = tmp_path / "dataset"
    rng = np.random.default_rng(13)
    for label, full in (("empty", False), ("full", True)):
        (data / label).mkdir(parents=True)
        for i in range(5):
            assert cv2.imwrite(str(data / label / f"20261204-1200{i:02d}.000_{i + 1:04d}.jpg"), bin_scene(full, rng))
    port = free_port()
    config = write_config(tmp_path, video, data, port)
    config.write_text(config.read_text().split("regions:")[0])
    base = f"http://127.0.0.1:{port}"

    def top() -> str | None:
        try:
            return jget(base + "/latest")["top"][0]["label"]
        except (OSError, AssertionError):
            return None
    daemon = Daemon("--config", config)
    try:
        daemon.wait_for(top, 60)
        assert top() not in NEW
        status, body = request(base + "/train?region=bin", "POST")
        assert status == 400 and b"no regions are configured" in body
        status, _ = request(base + "/train", "POST")
        assert status == 202
        done = wait_trained(base, daemon, "done")
        assert done["region"] is None and done["images"] == 10 and done["accuracy"] >= 0.9
        daemon.wait_for(lambda: top() in NEW, 30)
        assert daemon.log_count("taught model for the whole frame: ") == 1
        assert len(json.loads((data / ".taught" / "taught.json").read_text())["regions"][""]) == 1

        # The deploy's reload is refused (here: the config file broken meanwhile): failed, nothing kept.
        good = config.read_text()
        config.write_text(good + "top_kk: 3\n")
        status, _ = request(base + "/train", "POST")
        assert status == 202
        failed = wait_trained(base, daemon, "failed")
        assert "refused the taught model" in failed["error"] and "top_kk" in failed["error"]
        assert len(json.loads((data / ".taught" / "taught.json").read_text())["regions"][""]) == 1
        assert len(list((data / ".taught").glob("*.onnx"))) == 1 and top() in NEW
        config.write_text(good)

        # Too few pictures: one clear line naming the labels, nothing written.
        for p in sorted((data / "full").iterdir())[1:]:
            p.rename(tmp_path / p.name)
        status, _ = request(base + "/train", "POST")
        failed = wait_trained(base, daemon, "failed")
        assert "full (1)" in failed["error"] and "at least 2 pictures each" in failed["error"], failed
        assert ".train" not in failed["error"]
    finally:
        code = daemon.stop()
    assert code == 0, daemon.stderr()[-3000:]


@pytest.mark.skipif(MOSQUITTO is None, reason="needs the Mosquitto broker: apt-get install mosquitto")
def test_events_and_mqtt_states_use_the_taught_labels(tmp_path):
    """After a page training, the region's events and its MQTT state carry the new labels; Home Assistant's
    region sensor (discovery names the region, not its labels) is still announced."""
    video = make_video(tmp_path / "scene.avi", frames=40, fps=10.0, block=10)    # 1 s full, 1 s empty
    data = tmp_path / "dataset"
    make_dataset(data)
    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path, video, data, port)
    config.write_text(config.read_text() + f"""mqtt: {{url: "mqtt://127.0.0.1:{broker.port}/t/cam", client_id: cam,
       homeassistant: true}}
publish: {{threshold: 0.5, min_frames: 2}}
""")
    daemon = Daemon("--config", config)
    try:
        daemon.wait_for(lambda: region_label(base), 60)
        status, _ = request(base + "/train?region=bin", "POST")
        assert status == 202
        wait_trained(base, daemon, "done")
        since = time.monotonic()
        daemon.wait_for(lambda: {p.decode() for p in sub.payloads("t/cam/bin/state", since)} >= NEW, 30)
        daemon.wait_for(lambda: any(json.loads(p)["to"] in NEW and json.loads(p)["from"] in NEW
                                    for p in sub.payloads("t/cam/event", since)), 30)
        events = [json.loads(p) for p in sub.payloads("t/cam/event", since)]
        assert all(e["region"] == "bin" for e in events)
        late = Subscriber(broker.port, "homeassistant/#")
        try:
            daemon.wait_for(lambda: late.payloads("homeassistant/sensor/cam/region_bin/config"), 10)
        finally:
            late.close()
    finally:
        code = daemon.stop()
        sub.close()
        broker.stop()
    assert code == 0, daemon.stderr()[-3000:]
