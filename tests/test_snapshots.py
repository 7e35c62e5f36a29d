"""Event snapshots (edge_runtime/watch/snapshots.py): real JPEG files in a real folder, retention, a folder
that cannot be written, and names that try to leave the folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import stat
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.util import schema
from edge_runtime.config import Config
from edge_runtime.util.errors import ConfigError
from edge_runtime.watch.regions import crop_pixels
from edge_runtime.watch.snapshots import NAME_PATTERN, SnapshotConfig, SnapshotWriter, file_name, label_slug
from edge_runtime.core.stats import Stats

REPO = Path(__file__).resolve().parents[1]
WHEN = 1764684903.25      # 2025-12-02 14:15:03 UTC


def frame(width=320, height=240, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 200, (height, width, 3), dtype=np.uint8)


def own_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if NAME_PATTERN.fullmatch(p.name))


def test_construction_does_no_io(tmp_path):
    folder = tmp_path / "not" / "yet"
    writer = SnapshotWriter(folder)
    assert not folder.exists()
    assert writer.submit(frame(), "door", (0, 0, 1, 1), "open", WHEN) is None     # not started: nothing
    writer.close()
    assert not folder.exists()


def test_snapshot_is_a_jpeg_of_the_frame_with_the_box(tmp_path):
    stats = Stats()
    writer = SnapshotWriter(tmp_path / "snaps", stats=stats)
    writer.start()
    image = np.full((240, 320, 3), 128, np.uint8)
    box = (0.5, 0.25, 0.25, 0.5)
    name = writer.submit(image, "door", box, "Open, wide!", WHEN)
    assert name == "20251202T141503.250Z_door_open-wide.jpg"
    image[:] = 0               # the caller's frame may be reused at once: the writer kept its own copy
    writer.close()
    data = (tmp_path / "snaps" / name).read_bytes()
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 320, 3)
    x0, y0, x1, y1 = crop_pixels(box, 320, 240)
    # The box is drawn in red (BGR 0,0,255) on the grey frame; away from it the frame is unchanged.
    edge = decoded[y0 + (y1 - y0) // 2, x1 - 2].astype(int)
    assert edge[2] > 200 and edge[0] < 60 and edge[1] < 60, edge
    assert np.abs(decoded[5:40, 5:100].astype(int) - 128).max() < 8
    assert writer.written == 1 and writer.failed == 0
    assert stats.snapshot()["snapshots_written"] == 1
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == [name]    # no temporary file left


def test_names_unique_within_a_second_and_safe(tmp_path):
    writer = SnapshotWriter(tmp_path)
    writer.start()
    # Five events in one second, two of them in one millisecond: the names sort in the events' order.
    whens = [WHEN, WHEN, WHEN + 0.1, WHEN + 0.2, WHEN + 0.2004]
    names = [writer.submit(frame(64, 48), "door", None, label, when)
             for when, label in zip(whens, ["../../etc/passwd", "../../etc/passwd", "", None, "a/b\0c"], strict=True)]
    writer.close()
    assert names == ["20251202T141503.250Z_door_etc-passwd.jpg", "20251202T141503.251Z_door_etc-passwd.jpg",
                     "20251202T141503.350Z_door_none.jpg", "20251202T141503.450Z_door_none.jpg",
                     "20251202T141503.451Z_door_a-b-c.jpg"]
    assert sorted(names) == names and own_files(tmp_path) == names
    assert {oct(stat.S_IMODE((tmp_path / n).stat().st_mode)) for n in names} == {"0o640"}   # the group reads
    assert label_slug("hotdog, hot dog, red hot") == "hotdog-hot-dog-red-hot"
    assert len(label_slug("x" * 500)) == 40
    # A restarted writer learns the names already there and does not overwrite them.
    again = SnapshotWriter(tmp_path)
    again.start()
    assert again.submit(frame(64, 48), "door", None, "etc passwd", WHEN) == "20251202T141503.252Z_door_etc-passwd.jpg"
    again.close()
    # A region name that never passed the config check is refused, not written.
    again = SnapshotWriter(tmp_path)
    again.start()
    assert again.submit(frame(64, 48), "../up", None, "x", WHEN) is None
    again.close()
    assert not list(tmp_path.parent.glob("up_x*")) and not list(tmp_path.parent.glob("*/up_x*"))


def test_retention_by_count_keeps_the_newest(tmp_path):
    (tmp_path / "notes.txt").write_text("not a snapshot")            # not ours: never deleted
    (tmp_path / "20200101T000000Z_x.jpg").write_text("not our pattern")
    writer = SnapshotWriter(tmp_path, max_files=3)
    writer.start()
    names = [writer.submit(frame(64, 48, i), "door", None, "open", WHEN + 0.3 * i) for i in range(6)]
    writer.close()
    assert own_files(tmp_path) == sorted(names[-3:])
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "20200101T000000Z_x.jpg").exists()


def test_retention_by_size(tmp_path):
    writer = SnapshotWriter(tmp_path, max_files=1000, max_mb=0.1, jpeg_quality=95)
    writer.start()
    names = [writer.submit(frame(320, 240, i), "yard", (0, 0, 0.5, 0.5), "bird", WHEN + 2 * i) for i in range(6)]
    writer.close()
    sizes = {n: (tmp_path / n).stat().st_size for n in own_files(tmp_path)}
    assert 30_000 < min(sizes.values())          # noise compresses badly: a few files reach the 100 kB cap
    assert sum(sizes.values()) <= 0.1 * 1024 * 1024
    assert list(sizes) == sorted(names)[-len(sizes):] and 1 <= len(sizes) < 6


def test_queue_full_drops_and_counts(tmp_path):
    stats = Stats()
    writer = SnapshotWriter(tmp_path, stats=stats, queue_size=1)
    writer.start()
    big = frame(1920, 1080)
    names = [writer.submit(big, "door", None, "open", WHEN + i) for i in range(40)]
    writer.close()
    dropped = names.count(None)
    assert dropped > 0 and writer.dropped == dropped
    assert own_files(tmp_path) == sorted(n for n in names if n)
    assert stats.snapshot()["snapshots_dropped"] == dropped


def test_folder_that_is_a_file_fails_counted_and_warned_once(tmp_path, caplog):
    # Tests run as root, who can write into a chmod 0555 folder; a file where the folder should be
    # stops root too.
    blocker = tmp_path / "snaps"
    blocker.write_text("a file, not a folder")
    stats = Stats()
    writer = SnapshotWriter(blocker, stats=stats)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.watch.snapshots"):
        writer.start()          # no exception: classification must go on
        names = [writer.submit(frame(64, 48), "door", None, "open", WHEN + i) for i in range(3)]
        writer.close()
    assert names == [None] * 3  # the folder is known unusable: no event names a file (issue 28.5)
    assert writer.failed == 3 and writer.written == 0
    assert stats.snapshot()["snapshots_failed"] == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert blocker.read_text() == "a file, not a folder"


def test_immutable_folder_fails_counted(tmp_path):
    """A folder the file system refuses to change (chattr +i stops root as a read-only mount would)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        writer = SnapshotWriter(folder)
        writer.start()
        assert writer.submit(frame(64, 48), "door", None, "open", WHEN)
        writer.close()
        assert (writer.failed, writer.written) == (1, 0)
        assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


_FULL_DISK = r"""
import json, logging, resource, signal, sys
import numpy as np
from edge_runtime.watch.snapshots import SnapshotWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
w = SnapshotWriter(sys.argv[1])
w.start()
small = np.zeros((8, 8, 3), np.uint8)
noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
names = [w.submit(img, "door", None, "open", 1764684903.0 + i) for i, img in enumerate([noise, noise, small])]
w.close()
print(json.dumps({"names": names, "written": w.written, "failed": w.failed}))
"""


def test_full_disk_fails_counted_and_goes_on(tmp_path):
    """A disk that fills up: a file-size limit (works for root too) makes the big JPEGs fail mid-write."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["written"], out["failed"]) == (1, 2)
    assert own_files(tmp_path) == [out["names"][2]]          # the small one fits; no partial file
    assert [p.name for p in tmp_path.iterdir()] == [out["names"][2]]
    assert result.stderr.count("WARNING") == 1, result.stderr


_FILLING_DISK = r"""
import json, resource, signal, sys, time
import numpy as np
from edge_runtime.watch.snapshots import SnapshotWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
w = SnapshotWriter(sys.argv[1])
w.start()
small = np.zeros((8, 8, 3), np.uint8)
noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
names = []
for i, img in enumerate([small, noise, noise, small, small, noise, small]):
    done = w.written + w.failed
    names.append(w.submit(img, "door", None, "open", 1764684903.0 + i))
    while w.written + w.failed == done:          # one at a time: each submit sees the last outcome
        time.sleep(0.01)
w.close()
print(json.dumps({"names": names, "written": w.written, "failed": w.failed}))
"""


def test_no_event_names_a_snapshot_while_the_disk_is_full(tmp_path):
    """After a failed write (the disk is full) the next snapshots are still tried, but their names go to
    no event until one is written again: every name handed out is a file on disk."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", _FILLING_DISK, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    names = out["names"]
    assert (out["written"], out["failed"]) == (4, 3)
    # small ok, noise fails, noise (not named) fails, small (not named) written, small named, noise fails
    # (named: the last write had worked), small (not named) written
    assert [n is not None for n in names] == [True, True, False, False, True, True, False]
    on_disk = set(own_files(tmp_path))
    assert {names[0], names[4]} <= on_disk and names[1] not in on_disk and names[5] not in on_disk
    assert len(on_disk) == 4


def test_resolve_only_own_files_inside_the_folder(tmp_path):
    folder = tmp_path / "snaps"
    writer = SnapshotWriter(folder)
    writer.start()
    name = writer.submit(frame(64, 48), "door", None, "open", WHEN)
    writer.close()
    (tmp_path / "secret.txt").write_text("secret")
    (folder / "20251202T141503Z_door_link.jpg").symlink_to(tmp_path / "secret.txt")
    (folder / "20251202T141504Z_door_dir.jpg").mkdir()
    assert writer.resolve(name) == folder.resolve() / name
    assert writer.read(name) == (folder / name).read_bytes()
    for bad in ["../secret.txt", "..", "", "/etc/passwd", f"../snaps/{name}", f"x/{name}", f"{name}\0",
                name.replace("_door", "\\door"), "20251202T141503Z_door_link.jpg", "20251202T141504Z_door_dir.jpg",
                "20251202T141503Z_door_missing.jpg", "notes.txt", name.upper(), name + "/", None, 5, "a" * 5000]:
        assert writer.resolve(bad) is None, bad
        assert writer.read(bad) is None, bad


def test_config_section():
    assert SnapshotWriter.from_config(SnapshotConfig()) is None          # off unless dir is set
    cfg = schema.build(Config, {"snapshots": {"dir": "/var/lib/edge-runtime/snapshots", "max_files": 10}}).snapshots
    assert (cfg.dir, cfg.max_files, cfg.max_mb) == ("/var/lib/edge-runtime/snapshots", 10, 200.0)
    writer = SnapshotWriter.from_config(cfg)
    assert (writer.max_files, writer.max_bytes) == (10, 200 * 1024 * 1024)
    for bad, key in [({"max_files": 0}, "snapshots.max_files"), ({"max_mb": 0}, "snapshots.max_mb"),
                     ({"max_mb": float("inf")}, "snapshots.max_mb"), ({"keep": 1}, "snapshots.keep"),
                     ({"dir": 5}, "snapshots.dir")]:
        with pytest.raises(ConfigError) as exc:
            schema.build(Config, {"snapshots": bad}, file="c.yaml")
        assert exc.value.key == key and exc.value.file == "c.yaml"


def test_file_name_is_utc():
    assert file_name(0.0, "a", "b") == "19700101T000000.000Z_a_b.jpg"
    assert file_name(59.9996, "a", "b") == "19700101T000100.000Z_a_b.jpg"
    assert file_name(time.mktime((2026, 12, 2, 12, 0, 0, 0, 0, -1)), "a", "b").startswith("202612")


def test_counters_in_stats_and_metrics(tmp_path):
    from edge_runtime.core.metrics import Metrics

    stats = Stats()
    metrics = Metrics(stats)
    assert b"snapshots" not in metrics.exposition()                   # snapshots off: no such series
    blocker = tmp_path / "snaps"
    blocker.write_text("")
    writer = SnapshotWriter(blocker, stats=stats)
    writer.start()
    line = stats.snapshot()
    assert (line["snapshots_written"], line["snapshots_failed"], line["snapshots_dropped"]) == (0, 0, 0)
    writer.submit(frame(64, 48), "door", None, "open", WHEN)
    writer.close()
    text = metrics.exposition().decode()
    assert "edge_runtime_snapshots_failed_total 1.0" in text
    assert "edge_runtime_snapshots_written_total 0.0" in text


def test_a_missing_folder_is_created_with_one_warning_naming_it(tmp_path, caplog):
    folder = tmp_path / "snapshtos"          # a typo'd snapshots.dir
    with caplog.at_level(logging.WARNING, logger="edge_runtime"):
        writer = SnapshotWriter(folder)
        writer.start()
        writer.submit(frame(64, 48), "door", None, "open", WHEN)
        writer.close()
        again = SnapshotWriter(folder)        # there now: nothing to say
        again.start()
        again.close()
    warnings = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert warnings == [f"snapshot folder {folder} does not exist; creating it (check snapshots.dir if that is "
                        "not the folder you meant)"]
    assert len(own_files(folder)) == 1
