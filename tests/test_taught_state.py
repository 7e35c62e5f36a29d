"""teach/taught.py: the state folder's record of which taught model each region runs, applied over the config
the daemon loads (at start and on reload), never written into it. Hostile or stale state is one warning and
the config's own model, never a failed start."""

from __future__ import annotations

import logging

from edge_runtime import config as config_mod
from edge_runtime.teach import taught


def load(tmp_path, regions=True):
    path = tmp_path / "config.yaml"
    text = "model: base.onnx\nhttp:\n  collect_dir: dataset\n"
    if regions:
        text += "regions:\n  - {name: door, box: [0, 0, 0.5, 0.5]}\n  - {name: gate, box: [0.5, 0.5, 0.5, 0.5]}\n"
    path.write_text(text)
    return config_mod.load(str(path))


def entry(name, **extra):
    return {"file": name, "labels": ["closed", "open"], "accuracy": 0.975, "images": 24, **extra}


def test_no_state_is_the_config(tmp_path):
    cfg = load(tmp_path)
    assert taught.state_dir(cfg) == tmp_path / "dataset" / ".taught"
    assert taught.apply(cfg) == cfg
    assert taught.state_dir(config_mod.load(None)) is None


def test_the_model_in_use_goes_over_its_region_with_one_log_line(tmp_path, caplog):
    cfg = load(tmp_path)
    store = taught.Store(taught.state_dir(cfg))
    store.write({"door": [entry("door-20261204-120000.onnx"), entry("door-20261204-130000.onnx")]})
    (store.folder / "door-20261204-130000.onnx").write_bytes(b"onnx")
    with caplog.at_level(logging.INFO, logger="edge_runtime.teach"):
        out = taught.apply(cfg)
    door, gate = out.regions
    assert door.model == str(store.folder / "door-20261204-130000.onnx") and gate.model is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"taught model for region door: {door.model} (labels closed, open; held-out accuracy 97.5%; "
                     "24 images)"]


def test_stale_or_hostile_state_is_a_warning_and_the_config(tmp_path, caplog):
    cfg = load(tmp_path)
    store = taught.Store(taught.state_dir(cfg))
    store.write({"door": [entry("door-20261204-120000.onnx")], "gone": [entry("gone-20261204-120000.onnx")],
                 "gate": [entry("../../etc/passwd")]})
    with caplog.at_level(logging.INFO, logger="edge_runtime.teach"):
        assert taught.apply(cfg) == cfg            # the door's file is missing; gate's name is refused
    text = caplog.text
    assert "taught model for region door is gone" in text and "no longer configured are not used: gone" in text
    assert "passwd" not in text

    caplog.clear()
    store.path.write_text("{not json")
    with caplog.at_level(logging.INFO, logger="edge_runtime.teach"):
        assert taught.apply(cfg) == cfg
    assert "cannot read" in caplog.text and "running the config's models" in caplog.text


def test_the_whole_frame_and_the_history(tmp_path):
    cfg = load(tmp_path, regions=False)
    store = taught.Store(taught.state_dir(cfg))
    dropped = []
    for hour in (10, 11, 12):
        name = f"frame-20261204-{hour}0000.onnx"
        (store.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (store.folder / name).write_bytes(b"onnx")
        dropped += store.push(taught.FRAME, entry(name))
    assert [e["file"] for e in dropped] == ["frame-20261204-100000.onnx"]       # KEEP = 2
    store.forget(dropped)
    assert not (store.folder / "frame-20261204-100000.onnx").exists()
    out = taught.apply(cfg)
    assert out.model == str(store.folder / "frame-20261204-120000.onnx") and out.model_spec is None
    assert store.pop(taught.FRAME)["file"] == "frame-20261204-120000.onnx"
    assert taught.apply(cfg).model == str(store.folder / "frame-20261204-110000.onnx")
    store.pop(taught.FRAME)
    assert taught.apply(cfg) == cfg and store.pop(taught.FRAME) is None
