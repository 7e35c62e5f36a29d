"""The Teach page's parts that need no daemon, on the real HTTP sink over loopback: the unlabeled candidates
(distinct scenes only, at most 48 a region, the oldest dropped first, each the region's crop at the source's
resolution) and the gallery's pages for a label with hundreds of pictures."""

from __future__ import annotations

import json
import urllib.request

import cv2
import numpy as np

from edge_runtime import config as config_mod
from edge_runtime.core.stats import Stats
from edge_runtime.sinks import SinkContext
from edge_runtime.sources import Frame
from edge_runtime.watch.regions import parse_region_flag
from edge_runtime.web import teach
from edge_runtime.web.http import HttpSink

DOOR = parse_region_flag("door=0.5,0.2,0.4,0.5")          # 128x120 pixels of a 320x240 frame


def start(tmp_path) -> HttpSink:
    cfg = config_mod.HttpConfig(listen="127.0.0.1:0", collect_dir=str(tmp_path / "dataset"))
    sink = HttpSink(cfg).start(SinkContext(stats=Stats(), regions=(DOOR,)))
    sink.origin = f"http://127.0.0.1:{sink.address[1]}"
    return sink


def scene(seed: int) -> np.ndarray:
    """Random blocks: two seeds are two distinct scenes (their 32x32 thumbnails differ by far more than 6)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return cv2.resize(blocks, (128, 120), interpolation=cv2.INTER_NEAREST)


def show(sink: HttpSink, index: int, door: np.ndarray) -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    image[48:168, 160:288] = door[..., None]
    record = {"type": "prediction", "frame": index, "region": "door", "top": [{"label": "x", "score": 1.0}],
              "latency_ms": {"preprocess": 1.0, "inference": 1.0, "total": 2.0}}
    sink.prediction(record, Frame(image=image, index=index, ts=0.0, mono=0.0))
    sink.teach.sample()


def get(sink: HttpSink, path: str):
    with urllib.request.urlopen(sink.origin + path, timeout=5) as r:
        return r.read()


def test_candidates_are_distinct_bounded_and_the_oldest_go_first(tmp_path):
    sink = start(tmp_path)
    try:
        show(sink, 0, scene(0))
        show(sink, 1, np.clip(scene(0).astype(int) + 3, 0, 255).astype(np.uint8))   # a little brighter: same
        show(sink, 2, scene(0))
        items = json.loads(get(sink, "/teach/api/candidates?region=door"))["items"]
        assert [i["frame"] for i in items] == [0]
        for n in range(1, 60):
            show(sink, n + 10, scene(n))
        items = json.loads(get(sink, "/teach/api/candidates?region=door"))["items"]
        frames = [i["frame"] for i in items]
        assert len(frames) == teach.MAX_CANDIDATES == 48
        assert frames == sorted(frames, reverse=True) and frames[0] == 69      # newest first, the last kept
        assert 0 not in frames                                                 # the oldest were dropped
        full = cv2.imdecode(np.frombuffer(get(sink, f"/teach/candidate?region=door&id={items[0]['id']}&full=1"),
                                          np.uint8), cv2.IMREAD_GRAYSCALE)
        assert full.shape == (120, 128) and np.abs(full.astype(int) - scene(59)).mean() < 3    # the crop
    finally:
        sink.close()


def test_a_label_with_hundreds_of_pictures_is_paged(tmp_path):
    sink = start(tmp_path)
    try:
        folder = tmp_path / "dataset" / "open"
        folder.mkdir(parents=True)
        tile = cv2.imencode(".jpg", np.full((120, 128, 3), 90, np.uint8))[1].tobytes()
        for i in range(300):
            (folder / f"door_20261204-{100000 + i:06d}.000_{i + 1:04d}.jpg").write_bytes(tile)
        (folder / "gate_20261204-100000.000_0001.jpg").write_bytes(tile)      # another region's
        first = json.loads(get(sink, "/teach/api/pictures?region=door&label=open&page=0"))
        last = json.loads(get(sink, "/teach/api/pictures?region=door&label=open&page=99"))
        assert first["total"] == 300 and first["pages"] == 7 and len(first["names"]) == teach.PER_PAGE
        assert first["names"][0] == "door_20261204-100299.000_0300.jpg"        # newest first
        assert last["page"] == 6 and len(last["names"]) == 300 - 6 * teach.PER_PAGE
        thumb = cv2.imdecode(np.frombuffer(get(sink, "/teach/thumb?region=door&label=open&name=" + first["names"][0]),
                                           np.uint8), cv2.IMREAD_COLOR)
        assert max(thumb.shape[:2]) <= teach.THUMB_SIDE
        overview = json.loads(get(sink, "/teach/api/overview?region=door"))
        assert overview["labels"] == [{"name": "open", "count": 300}]
    finally:
        sink.close()


def test_a_training_cut_short_leaves_nothing_at_the_next_start(tmp_path):
    data = tmp_path / "dataset"
    (data / "open").mkdir(parents=True)
    picture = data / "open" / "door_20261204-100000.000_0001.jpg"
    picture.write_bytes(cv2.imencode(".jpg", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    (data / ".train-999" / "open").mkdir(parents=True)
    (data / ".train-999" / "open" / picture.name).hardlink_to(picture)
    (data / ".taught").mkdir()
    (data / ".taught" / ".door-20261204-100000.onnx.x1y2.tmp").write_bytes(b"half a model")
    sink = start(tmp_path)
    sink.close()
    assert not (data / ".train-999").exists() and not list((data / ".taught").iterdir())
    assert picture.read_bytes()[:2] == b"\xff\xd8"
