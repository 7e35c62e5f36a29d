"""Regions (edge_runtime/watch/regions.py): config rules, pixel crops, batches, and the proof on real
pretrained models and real photos that a region is classified as if its crop were the frame."""

from __future__ import annotations

import json
import math
import random

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime import config as config_mod
from edge_runtime.util import schema
from edge_runtime.engines.ort import Engine
from edge_runtime.util.errors import ConfigError
from edge_runtime.watch.events import RegionState
from edge_runtime.engines.spec import InputSpec
from edge_runtime.engines.postprocess import Postprocessor
from edge_runtime.engines.preprocess import Preprocessor
from edge_runtime.watch.regions import (
    RegionConfig, RegionGroup, crop, crop_pixels, fill_batch, group_by_model, parse_region_flag,
)
from edge_runtime.watch.snapshots import NAME_PATTERN, SnapshotWriter
from edge_runtime.sources import SourceOptions, open_source

# The fastest fixture model; on it these photos are `robust` (same top-1 under any interpolation, margin
# >= 0.10) and hot_dog/coffee change their top-1 when red and blue are swapped (checked below).
MODEL = "mobilenet_v1_0.5_160_quant"


# --- config ----------------------------------------------------------------------------------

def load_yaml(tmp_path, text: str):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return config_mod.load(str(path)), str(path)


def test_regions_from_a_config_file(tmp_path):
    cfg, _ = load_yaml(tmp_path, """
regions:
  - name: door
    box: [0.55, 0.10, 0.45, 0.80]
    model: models/door.onnx
    threshold: 0.6
    min_frames: 3
    thresholds: {open: 0.8}
  - name: feeder_1
    box: [0, 0, 0.5, 0.5]
snapshots: {dir: /var/lib/edge-runtime/snapshots}
""")
    door, feeder = cfg.regions
    # A region's model, like `model:`, is relative to the config file's folder.
    assert door == RegionConfig(name="door", box=(0.55, 0.10, 0.45, 0.80), model=str(tmp_path / "models/door.onnx"),
                                threshold=0.6, min_frames=3, thresholds={"open": 0.8})
    assert (feeder.name, feeder.model, feeder.threshold, feeder.min_frames, feeder.thresholds) == \
        ("feeder_1", None, None, None, None)
    assert cfg.snapshots.dir == "/var/lib/edge-runtime/snapshots"
    assert config_mod.load(None).regions == ()          # no regions: today's behaviour
    assert schema.build(config_mod.Config, schema.to_dict(cfg)) == cfg


BAD_REGIONS = [
    # (regions YAML, key named, words the message must hold)
    ("[{name: a, box: [0.6, 0.1, 0.5, 0.5]}]", "regions[0].box", "outside the frame"),
    ("[{name: a, box: [0.1, 0.6, 0.5, 0.5]}]", "regions[0].box", "outside the frame"),
    ("[{name: a, box: [-0.1, 0, 0.5, 0.5]}]", "regions[0].box", "-0.1"),
    ("[{name: a, box: [0.1, 0.1, 0, 0.5]}]", "regions[0].box", "above 0"),
    ("[{name: a, box: [0.1, 0.1, 0.5, 0]}]", "regions[0].box", "above 0"),
    ("[{name: a, box: [0.1, 0.1, 0.5]}]", "regions[0].box", "[0.1, 0.1, 0.5]"),
    ("[{name: a, box: [0.1, 0.1, .nan, 0.5]}]", "regions[0].box[2]", "nan"),
    ("[{name: a, box: [0.1, 0.1, .inf, 0.5]}]", "regions[0].box[2]", "inf"),
    ("[{name: a, box: [0.1, 0.1, '0.5', 0.5]}]", "regions[0].box[2]", "'0.5'"),
    ("[{name: a, box: 0.5}]", "regions[0].box", "0.5"),
    ("[{name: a}]", "regions[0].box", "required"),
    ("[{box: [0, 0, 1, 1]}]", "regions[0].name", "required"),
    ("[{name: a, box: [0, 0, 1, 1]}, {name: a, box: [0, 0, 0.5, 0.5]}]", "regions[1].name", "duplicate"),
    ("[{name: Door, box: [0, 0, 1, 1]}]", "regions[0].name", "'Door'"),
    ("[{name: '../x', box: [0, 0, 1, 1]}]", "regions[0].name", "'../x'"),
    ("[{name: '', box: [0, 0, 1, 1]}]", "regions[0].name", "''"),
    (f"[{{name: {'a' * 33}, box: [0, 0, 1, 1]}}]", "regions[0].name", "a" * 33),
    ("[{name: a, box: [0, 0, 1, 1], colour: red}]", "regions[0].colour", "unknown key"),
    ("[{name: a, box: [0, 0, 1, 1], threshold: 1.5}]", "regions[0].threshold", "1.5"),
    ("[{name: a, box: [0, 0, 1, 1], min_frames: 0}]", "regions[0].min_frames", "0"),
    ("[{name: a, box: [0, 0, 1, 1], min_frames: 10001}]", "regions[0].min_frames", "10001"),
    ("[{name: a, box: [0, 0, 1, 1], min_frames: 2.5}]", "regions[0].min_frames", "2.5"),
    ("[{name: a, box: [0, 0, 1, 1], thresholds: {open: 1.2}}]", "regions[0].thresholds", "1.2"),
    ("[{name: a, box: [0, 0, 1, 1], thresholds: {open: high}}]", "regions[0].thresholds.open", "'high'"),
    ("[{name: a, box: [0, 0, 1, 1], thresholds: {3: 0.5}}]", "regions[0].thresholds.3", "3"),
    ("[{name: a, box: [0, 0, 1, 1], thresholds: [open]}]", "regions[0].thresholds", "['open']"),
    ("{name: a, box: [0, 0, 1, 1]}", "regions", "a list"),
    ("[" + ", ".join(f"{{name: r{i}, box: [0, 0, 1, 1]}}" for i in range(65)) + "]", "regions", "at most 64"),
    ("[" + ", ".join(f"{{name: r{i}, box: [0, 0, 1, 1]}}" for i in range(1000)) + "]", "regions", "1000 regions"),
]


@pytest.mark.parametrize("regions, key, words", BAD_REGIONS)
def test_region_config_errors_name_file_key_and_value(tmp_path, regions, key, words):
    with pytest.raises(ConfigError) as exc:
        load_yaml(tmp_path, f"regions: {regions}\n")
    assert exc.value.file == str(tmp_path / "edge.yaml")
    assert exc.value.key == key, str(exc.value)
    assert words in exc.value.detail, str(exc.value)


def test_region_flag():
    assert parse_region_flag("door=0.5,0.1,0.4,0.8") == RegionConfig(name="door", box=(0.5, 0.1, 0.4, 0.8))
    assert parse_region_flag("a=0,0,1,1").box == (0.0, 0.0, 1.0, 1.0)
    for bad, words in [("door", "NAME=X,Y,W,H"), ("door=0.5,0.1,0.4", "NAME=X,Y,W,H"),
                       ("door=a,b,c,d", "'door=a,b,c,d'"), ("=0,0,1,1", "''"), ("Door=0,0,1,1", "'Door'"),
                       ("door=0.7,0,0.5,1", "outside the frame"), ("door=0,0,0,1", "above 0"),
                       ("door=nan,0,1,1", "nan"), ("door=1e999,0,1,1", "inf")]:
        with pytest.raises(ConfigError) as exc:
            parse_region_flag(bad)
        assert (exc.value.file, exc.value.key) == ("command line", "--region")
        assert words in exc.value.detail and bad in exc.value.detail, str(exc.value)


# --- pixels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("box, size, pixels", [
    ((0, 0, 1, 1), (640, 480), (0, 0, 640, 480)),
    ((0.5, 0.25, 0.5, 0.5), (640, 480), (320, 120, 640, 360)),
    ((0.55, 0.10, 0.45, 0.80), (1920, 1080), (1056, 108, 1920, 972)),
    ((0.1, 0.1, 0.1, 0.1), (15, 15), (2, 2, 3, 3)),          # 1.5 -> 2, 3.0 -> 3: halves round up
    ((0.5, 0.5, 1e-6, 1e-6), (100, 100), (50, 50, 51, 51)),  # thinner than a pixel: still one pixel
    ((0.999, 0.999, 0.001, 0.001), (100, 100), (99, 99, 100, 100)),
    ((0, 0, 1 + 1e-12, 1), (10, 10), (0, 0, 10, 10)),       # a rounding error past the edge: clamped
])
def test_crop_pixels(box, size, pixels):
    assert crop_pixels(box, *size) == pixels


def test_touching_boxes_tile_without_gap_or_overlap():
    rng = random.Random(7)
    for _ in range(500):
        width = rng.randint(1, 4000)
        cuts = sorted(rng.random() for _ in range(3))
        edges = [0.0] + cuts + [1.0]
        spans = [crop_pixels((a, 0, b - a, 1), width, 1) for a, b in zip(edges, edges[1:], strict=False) if b > a]
        for (_, _, right, _), (left, _, _, _) in zip(spans, spans[1:], strict=False):
            assert right == left or right == left + 1    # touching (one overlap only where a span was forced to 1 px)
        for x0, _, x1, _ in spans:
            assert 0 <= x0 < x1 <= width


def test_crop_is_a_view():
    image = np.zeros((100, 200, 3), np.uint8)
    view = crop(image, (0.25, 0.5, 0.5, 0.5))
    assert view.shape == (50, 100, 3) and np.shares_memory(view, image) and not view.flags.c_contiguous
    view[:] = 7
    assert image[50:, 50:150].min() == 7 and image.sum() == 7 * 50 * 100 * 3


SPECS = [
    dict(size=[24, 32], resize=None, color="rgb", layout="nchw", dtype="float32"),
    dict(size=[24, 24], resize=30, color="rgb", layout="nchw", dtype="float32", interpolation="area"),
    dict(size=[24, 24], resize=28, color="bgr", layout="nhwc", dtype="float32"),
    dict(size=[24, 32], color="rgb", layout="nhwc", dtype="uint8"),
    dict(size=[24, 32], color="rgb", layout="nchw", dtype="uint8"),
    dict(size=[24, 32], color="bgr", layout="nhwc", dtype="uint8"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_preprocessor_takes_crop_views(spec):
    """The Preprocessor reads a strided view (a region) exactly as the same pixels copied out."""
    pre = Preprocessor(schema.build(InputSpec, spec))
    rng = np.random.default_rng(1)
    for image in (rng.integers(0, 256, (90, 130, 3), dtype=np.uint8),
                  rng.integers(0, 256, (90, 130, 4), dtype=np.uint8),
                  rng.integers(0, 256, (90, 130), dtype=np.uint8)):
        for box in [(0.1, 0.2, 0.5, 0.6), (0.5, 0, 0.5, 1), (0.33, 0.33, 0.2, 0.1)]:
            view = crop(image, box)
            assert not view.flags.c_contiguous
            np.testing.assert_array_equal(pre(view), pre(np.ascontiguousarray(view)))


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: "-".join(str(v) for v in s.values()))
def test_fill_batch_matches_slot_by_slot(spec):
    pre = Preprocessor(schema.build(InputSpec, spec))
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = [(0, 0, 0.5, 0.5), (0.5, 0, 0.5, 1), (0.1, 0.6, 0.3, 0.4)]
    tensor = pre.new_buffer(4)
    tensor[3] = 42
    filled = fill_batch(pre, image, boxes, tensor)
    assert filled.shape == (3,) + pre.shape[1:] and np.shares_memory(filled, tensor)
    for slot, box in enumerate(boxes):
        np.testing.assert_array_equal(filled[slot], pre(crop(image, box))[0])
    assert (tensor[3] == 42).all()               # slots beyond the regions are left alone
    with pytest.raises(ValueError, match="4 regions but the tensor has 3 slots"):
        fill_batch(pre, image, boxes + [boxes[0]], pre.new_buffer(3))


# --- real models, real photos ----------------------------------------------------------------

def classify_boxes(engine, pre, image: np.ndarray, boxes: list, tensor: np.ndarray) -> np.ndarray:
    """Raw model outputs for each box of `image`, one row per box (what RegionGroup.classify runs,
    without its top-k: these tests look at the rows themselves).

    One `session.run` for all boxes when the model's batch axis is dynamic; a model with a fixed
    batch of 1 (most exported TFLite models) gets one run per box through slot 0 of `tensor`.
    """
    if engine.batch_axis_dynamic:
        return engine.run_batch(fill_batch(pre, image, boxes, tensor))
    rows = []
    for box in boxes:
        pre(crop(image, box), tensor[:1])
        rows.append(engine.run_batch(tensor[:1])[0])
    return np.stack(rows) if rows else np.empty((0, 0))


def batch_dynamic_copy(src, dst):
    """The fixture model with a symbolic batch axis (the fixtures are exported with a fixed batch of 1).

    tf2onnx baked the batch of 1 into the graph in two places: the input/output dims (made 'N' here)
    and the constant target shapes of the Reshape nodes before the classifier ([1, 512, 1, 1] and
    [1, 1001]; their leading 1 becomes -1). Nothing else depends on the batch: convolutions, pooling and
    QDQ nodes are per image. Weights and every other node stay byte for byte the same.
    """
    model = onnx.load(str(src))
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        assert dim.dim_value == 1
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    inits = {init.name: init for init in graph.initializer}
    reshapes = 0
    for node in graph.node:
        if node.op_type == "Reshape":
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            assert shape[0] == 1
            shape[0] = -1
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
            reshapes += 1
    assert reshapes == 2
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def expected(fixtures):
    return json.loads((fixtures / "expected.json").read_text())["models"][MODEL]


@pytest.fixture(scope="module")
def engines(fixtures, tmp_path_factory):
    """(fixed batch-1 engine on the fixture as shipped, batch-dynamic engine on its edited copy)."""
    folder = tmp_path_factory.mktemp("model")
    src = fixtures / "models" / f"{MODEL}.onnx"
    dst = batch_dynamic_copy(src, folder / src.name)
    sidecar = (fixtures / "models" / f"{MODEL}.yaml").read_text()
    labels = (fixtures / "imagenet_labels.txt").resolve()
    (folder / f"{MODEL}.yaml").write_text(sidecar.replace("../imagenet_labels.txt", str(labels)))
    fixed, dynamic = Engine(str(src), 2), Engine(str(dst), 2)
    assert not fixed.batch_axis_dynamic and dynamic.batch_axis_dynamic
    return fixed, dynamic


def photo(fixtures, name):
    image = cv2.imread(str(fixtures / "photos" / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def tile(*photos):
    """Photos side by side, top-aligned on black; the box of each one in fractions of the frame."""
    height = max(p.shape[0] for p in photos)
    width = sum(p.shape[1] for p in photos)
    canvas = np.zeros((height, width, 3), np.uint8)
    boxes, x = [], 0
    for p in photos:
        h, w = p.shape[:2]
        canvas[:h, x:x + w] = p
        boxes.append((x / width, 0.0, w / width, h / height))
        x += w
    return canvas, boxes


def read_one(uri):
    source = open_source(str(uri), SourceOptions())
    source.open()
    try:
        return source.read()
    finally:
        source.close()


def test_two_regions_one_batched_run_give_each_photos_top1(engines, fixtures, expected, tmp_path):
    fixed, dynamic = engines
    names = ["hot_dog.jpg", "coffee.png"]
    photos = [photo(fixtures, n) for n in names]
    canvas, boxes = tile(*photos)
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "tiled.png"), canvas)
    frame = read_one(folder)                          # through the daemon's own folder source
    assert frame.image.shape == (400, 1112, 3)
    pre, post = Preprocessor(dynamic.spec.input), Postprocessor(dynamic.spec, 3)
    tensor = pre.new_buffer(len(boxes))
    batch = fill_batch(pre, frame.image, boxes, tensor)
    for slot, p in enumerate(photos):
        # The crop is the photo's own pixels: its tensor is the photo's, preprocessed as a frame.
        np.testing.assert_array_equal(batch[slot], pre(p)[0])
    outputs = dynamic.run_batch(batch)                # both regions, one session.run
    assert outputs.shape == (2, 1001)
    single = classify_boxes(fixed, pre, frame.image, boxes, pre.new_buffer(1))   # fixed batch: one run each
    for row, one, name in zip(outputs, single, names, strict=True):
        top = post.top(row)[0]
        assert (top["index"], top["label"]) == (expected[name]["top1"], expected[name]["label"]), name
        assert top["score"] == pytest.approx(expected[name]["score"], abs=0.03), name
        assert np.abs(row.astype(int) - one.astype(int)).max() <= 2     # batch of 2 == two runs of 1
    assert post.top(single[0])[0]["label"] == expected[names[0]]["label"]


def test_a_box_off_by_a_few_pixels_still_works(engines, fixtures, expected):
    _, dynamic = engines
    names = ["hot_dog.jpg", "coffee.png"]
    canvas, boxes = tile(*(photo(fixtures, n) for n in names))
    height, width = canvas.shape[:2]
    pre, post = Preprocessor(dynamic.spec.input), Postprocessor(dynamic.spec, 1)
    shifted = []
    for dx, dy, dw, dh in [(4, 0, 0, 0), (-4, 3, 0, 0), (3, 3, -6, -6), (-3, -3, 5, 5), (0, 0, -5, 0)]:
        for (x, y, w, h) in boxes:
            x0, y0 = max(x * width + dx, 0), max(y * height + dy, 0)
            x1, y1 = min((x + w) * width + dx + dw, width), min((y + h) * height + dy + dh, height)
            shifted.append((x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height))
    outputs = classify_boxes(dynamic, pre, canvas, shifted, pre.new_buffer(len(shifted)))
    assert len(outputs) == 10
    for i, row in enumerate(outputs):
        assert post.top(row)[0]["label"] == expected[names[i % 2]]["label"], shifted[i]


def test_colour_order_is_right(engines, fixtures, expected):
    """The same crops through a Preprocessor told the model is BGR get both photos wrong: a swapped
    channel order in the region path would be caught by the tests above."""
    _, dynamic = engines
    names = ["hot_dog.jpg", "coffee.png"]
    canvas, boxes = tile(*(photo(fixtures, n) for n in names))
    post = Postprocessor(dynamic.spec, 1)
    labels = {}
    for color in ("rgb", "bgr"):
        spec = schema.build(InputSpec, {**schema.to_dict(dynamic.spec.input), "color": color})
        pre = Preprocessor(spec)
        labels[color] = [post.top(r)[0]["label"] for r in classify_boxes(dynamic, pre, canvas, boxes,
                                                                         pre.new_buffer(2))]
    assert labels["rgb"] == [expected[n]["label"] for n in names]
    assert all(a != b for a, b in zip(labels["rgb"], labels["bgr"], strict=True)), labels


def test_clip_one_half_changes_one_event_and_a_snapshot(engines, fixtures, expected, tmp_path):
    """A video written with OpenCV: the left half a bird throughout, the right half a hot dog, then an owl
    from frame 5. With min_frames 3: each region's first state at frame 2, and exactly one change, for
    the right region only, at frame 5 + 3 - 1 = 7; a snapshot of the full frame for each event."""
    _, dynamic = engines
    bird, hot_dog, owl = (photo(fixtures, n) for n in ("bird.png", "hot_dog.jpg", "owl.jpg"))
    assert hot_dog.shape == owl.shape == (384, 512, 3)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (1024, 384))
    assert writer.isOpened()
    for i in range(10):
        frame = np.zeros((384, 1024, 3), np.uint8)
        frame[:343, :512] = bird
        frame[:, 512:] = hot_dog if i < 5 else owl
        writer.write(frame)
    writer.release()

    regions = [RegionConfig(name="feeder", box=(0, 0, 0.5, 343 / 384)),
               RegionConfig(name="door", box=(0.5, 0, 0.5, 1), thresholds={"ruffed grouse, partridge, "
                                                                            "Bonasa umbellus": 0.5})]
    publish = config_mod.PublishConfig(threshold=0.5, min_frames=3)
    states = [RegionState.from_config(r, publish) for r in regions]
    boxes = [r.box for r in regions]
    pre, post = Preprocessor(dynamic.spec.input), Postprocessor(dynamic.spec, 1)
    tensor = pre.new_buffer(len(regions))
    snapshots = SnapshotWriter(tmp_path / "snaps", max_files=10)
    snapshots.start()
    source = open_source(str(clip), SourceOptions())
    source.open()
    events = []
    try:
        while (frame := source.read()) is not None:
            outputs = classify_boxes(dynamic, pre, frame.image, boxes, tensor)
            for region, state, row in zip(regions, states, outputs, strict=True):
                top = post.top(row)[0]
                event = state.update(top["label"], top["score"], frame.index, frame.ts)
                if event is not None:
                    event["snapshot"] = snapshots.submit(frame.image, region.name, region.box, event["to"],
                                                         event["ts"])
                    events.append(event)
    finally:
        source.close()
        snapshots.close()
    assert [(e["region"], e["from"], e["to"], e["frame"]) for e in events] == [
        ("feeder", None, expected["bird.png"]["label"], 2),
        ("door", None, expected["hot_dog.jpg"]["label"], 2),
        ("door", expected["hot_dog.jpg"]["label"], expected["owl.jpg"]["label"], 7),
    ]
    assert math.isclose(events[2]["previous_for_s"], events[2]["ts"] - events[1]["ts"], abs_tol=1e-3)
    assert [s.summary()["frames"] for s in states] == [10, 10]
    files = sorted(p.name for p in (tmp_path / "snaps").iterdir())
    assert files == sorted(e["snapshot"] for e in events)
    assert all(NAME_PATTERN.fullmatch(f) for f in files)
    assert events[2]["snapshot"].endswith("_door_ruffed-grouse-partridge-bonasa-umbellus.jpg")
    for name in files:
        image = cv2.imread(str(tmp_path / "snaps" / name))
        assert image is not None and image.shape == (384, 1024, 3)


def test_region_group_per_model(engines, fixtures, expected):
    fixed, dynamic = engines
    names = ["hot_dog.jpg", "coffee.png"]
    canvas, boxes = tile(*(photo(fixtures, n) for n in names))
    regions = [RegionConfig(name="left", box=boxes[0]), RegionConfig(name="right", box=boxes[1], model="other.onnx"),
               RegionConfig(name="again", box=boxes[0])]
    groups = group_by_model(regions, "default.onnx")
    assert {m: [r.name for r in g] for m, g in groups.items()} == {"default.onnx": ["left", "again"],
                                                                   "other.onnx": ["right"]}
    want = [expected[n]["label"] for n in names]
    for engine in (dynamic, fixed):
        group = RegionGroup(engine, regions, top_k=2)
        assert len(group.tensor) == (3 if engine.batch_axis_dynamic else 1)
        tops = group.classify(canvas)
        assert [t[0]["label"] for t in tops] == [want[0], want[1], want[0]]
        assert all(len(t) == 2 for t in tops) and min(group.last_ms) > 0
    with pytest.raises(ValueError):
        RegionGroup(dynamic, [])


def test_a_group_works_its_windows_out_again_when_the_frame_size_changes(tiny_model):
    """RegionGroup keeps the model windows of the last frame size: a new size (a camera that changed
    mode, a folder of mixed sizes) gets its own, and grey frames are accepted as the Preprocessor does."""
    engine = Engine(str(tiny_model), 1)
    regions = [RegionConfig(name="a", box=(0, 0, 0.5, 0.5)), RegionConfig(name="b", box=(0.3, 0.2, 0.7, 0.8))]
    group = RegionGroup(engine, regions)
    rng = np.random.default_rng(5)
    for image in (rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                  rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                  rng.integers(0, 256, (97, 61), dtype=np.uint8),
                  rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)):
        tops = group.classify(image)
        n = 2 if engine.batch_axis_dynamic else 1
        expected = [group.pre(crop(image, r.box))[0] for r in regions][-n:]
        np.testing.assert_array_equal(group.tensor[:n], np.stack(expected))
        post = Postprocessor(engine.spec)
        assert tops == [post.top(engine.run_batch(group.pre(crop(image, r.box)))[0]) for r in regions]


# --- bounds and labels checked against the model (issue 28.8) ------------------------------------

def _daemon(tmp_path, *args, limit_as: int | None = None):
    """The real daemon, optionally under an address-space limit (a bound must hold before any allocation)."""
    import resource
    import subprocess
    import sys

    from harness import REPO, daemon_env

    def limit():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    return subprocess.run([sys.executable, "-m", "edge_runtime", *map(str, args)], capture_output=True, text=True,
                          timeout=60, env=daemon_env(), cwd=REPO, preexec_fn=limit)


def _errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if " ERROR " in line or line.startswith("ERROR")]


@pytest.mark.parametrize("how", ["config", "flags"])
def test_too_many_regions_is_one_line_before_anything_is_allocated(tmp_path, how):
    from tiny_model import make_channel_model
    model = make_channel_model(tmp_path / "m.onnx", size=(224, 224))
    if how == "config":
        cfg = tmp_path / "c.yaml"
        cfg.write_text("regions:\n" + "".join(f"  - {{name: r{i}, box: [0, 0, 0.5, 0.5]}}\n" for i in range(1000)))
        args = ["--config", cfg]
    else:
        args = [a for i in range(65) for a in ("--region", f"r{i}=0,0,0.5,0.5")]
    for extra in (["--validate-config"], ["--max-frames", "1"]):
        # 1000 regions of a 224x224 model took 2.8 GB: 1.5 GB of address space must be plenty for the refusal
        proc = _daemon(tmp_path, "--model", model, "--source", "synthetic://64x48", *args, *extra,
                       limit_as=1536 << 20)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = _errors(proc)
        assert len(errors) == 1 and "at most 64" in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_a_threshold_for_a_label_the_model_does_not_have_is_named(tmp_path):
    from tiny_model import make_channel_model
    model = make_channel_model(tmp_path / "m.onnx")          # labels red, green, blue
    other = make_channel_model(tmp_path / "other.onnx", color="bgr")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""regions:
  - {{name: left, box: [0, 0, 0.5, 1], thresholds: {{red: 0.6, purple: 0.8, Green: 0.7}}}}
  - {{name: right, box: [0.5, 0, 0.5, 1], model: {other}, thresholds: {{blue: 0.9, open: 0.5}}}}
""")
    proc = _daemon(tmp_path, "--config", cfg, "--model", model, "--source", "synthetic://64x48", "--max-frames", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stderr.splitlines() if "would never apply" in line]
    assert len(warned) == 3, proc.stderr
    assert "regions[0].thresholds.purple" in warned[0] and "'purple'" in warned[0]
    assert "regions[0].thresholds.Green" in warned[1] and "did you mean 'green'" in warned[1]
    assert "regions[1].thresholds.open" in warned[2] and "other.onnx" in warned[2]
    assert not any("thresholds.red" in w or "thresholds.blue" in w for w in warned)
    proc = _daemon(tmp_path, "--config", cfg, "--model", model, "--source", "synthetic://64x48", "--validate-config")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-2000:]
    errors = _errors(proc)
    assert len(errors) == 1 and "key 'regions[0].thresholds.purple'" in errors[0] and str(cfg) in errors[0], errors
