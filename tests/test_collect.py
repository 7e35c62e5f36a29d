"""`python -m edge_runtime collect`: a real OpenCV clip with a still part and a changing part, collected
through the real CLI; hostile labels; a camera that is missing or busy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_runtime.teach.collect import Writer
from harness import REPO, daemon_env, free_port, run_daemon

FAKES = REPO / "tests" / "fakes"
W, H, FPS = 320, 240, 10
STILL_S, MOVING_S = 6, 6                       # seconds of each part
REGION = [0.5, 0.0, 0.5, 0.5]                  # top-right quarter: 160x120 pixels of the clip
BACKGROUND = (40, 160, 40)                     # BGR green around the region


def grey_level(index: int) -> int:
    """The region's grey level in frame `index`: constant while still, then a big step every frame."""
    if index < STILL_S * FPS:
        return 128
    return 30 + (index * 37) % 200


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 s of a still scene, then 6 s where the top-right quarter changes its grey level every frame."""
    path = tmp_path_factory.mktemp("clip") / "scene.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(FPS), (W, H))
    assert writer.isOpened()
    for i in range((STILL_S + MOVING_S) * FPS):
        frame = np.full((H, W, 3), BACKGROUND, np.uint8)
        frame[:H // 2, W // 2:] = grey_level(i)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(f"regions:\n  - name: door\n    box: {REGION}\n  - name: window\n    box: [0, 0, 0.5, 0.5]\n")
    return path


def collect(*args, env=None):
    return run_daemon("collect", *args, timeout=60, env=env)


def summary(stderr: str) -> tuple[int, int, int]:
    m = re.search(r"saved (\d+), skipped (\d+) near-duplicates of (\d+) frames considered", stderr)
    assert m, stderr
    return tuple(int(v) for v in m.groups())


def jpegs(folder):
    return sorted(folder.glob("*.jpg"))


def test_every_second_of_video_time_with_near_duplicates_skipped(clip, tmp_path):
    out = tmp_path / "data"
    result = collect("--source", clip, "--out", out, "--label", "closed")
    assert result.returncode == 0, result.stderr
    # One frame per second of the clip's own time (it decodes in far less than a second): 12 considered.
    # The still 6 s give one picture and 5 skips; each of the changing 6 s gives a new one.
    assert summary(result.stderr) == (1 + MOVING_S, STILL_S - 1, STILL_S + MOVING_S)
    files = jpegs(out / "closed")
    assert len(files) == 1 + MOVING_S and len({f.name for f in files}) == len(files)
    assert not [p for p in (out / "closed").iterdir() if p.suffix != ".jpg"]     # no temp file left
    image = cv2.imread(str(files[0]))
    assert image.shape == (H, W, 3)                                            # whole frames
    assert "collect: saved 1 / skipped 0 near-duplicates / target none" in result.stderr
    assert "Traceback" not in result.stderr

    # --every 0: every frame; the 60 still frames give one picture.
    again = collect("--source", clip, "--out", out, "--label", "closed", "--every", "0")
    assert again.returncode == 0, again.stderr
    assert summary(again.stderr) == (1 + MOVING_S * FPS, STILL_S * FPS - 1, (STILL_S + MOVING_S) * FPS)
    assert len(jpegs(out / "closed")) == 2 + MOVING_S + MOVING_S * FPS          # added, none overwritten


def test_count_stops_early_and_the_progress_line_shows_the_target(clip, tmp_path):
    out = tmp_path / "data"
    result = collect("--source", clip, "--out", out, "--unlabeled", "--every", "0.5", "--count", "3")
    assert result.returncode == 0, result.stderr
    saved, skipped, considered = summary(result.stderr)
    # Half-second steps: 12 still steps (1 saved, 11 skipped), then the 2nd and 3rd saves come from the
    # first two changing steps.
    assert (saved, skipped, considered) == (3, 2 * STILL_S - 1, 2 * STILL_S + 2)
    assert "collect: done:" in result.stderr
    assert "saved 3 / skipped 11 near-duplicates / target 3" in result.stderr
    assert len(jpegs(out / "unlabeled")) == 3 and os.listdir(out) == ["unlabeled"]


def test_region_crop_is_saved_at_source_resolution(clip, config, tmp_path):
    out = tmp_path / "data"
    result = collect("--source", clip, "--config", config, "--region", "door", "--out", out, "--label", "open",
                     "--every", "3")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr) == (3, 1, 4)             # t = 0, 3 (still: skipped), 6, 9
    files = jpegs(out / "open")
    assert all(f.name.startswith("door_") for f in files)
    levels = []
    for f in files:
        image = cv2.imread(str(f))
        assert image.shape == (H // 2, W // 2, 3)          # the crop's own pixels: 160x120, not resized
        b, g, r = image.reshape(-1, 3).mean(0)
        assert abs(b - g) < 4 and abs(g - r) < 4           # all grey: none of the green around the region
        levels.append(g)
    expected = [grey_level(0), grey_level(6 * FPS), grey_level(9 * FPS)]
    assert levels == pytest.approx(expected, abs=4)


def test_unknown_region_lists_the_configured_ones(clip, config, tmp_path):
    result = collect("--source", clip, "--config", config, "--region", "garage", "--out", tmp_path / "d",
                     "--label", "x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no region 'garage'" in lines[0] and "door, window" in lines[0]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("label", ["../escape", "a/b", "..", "", "x y", "unlabeled", "é", "a" * 65])
def test_hostile_labels_are_refused(label, clip, tmp_path):
    out = tmp_path / "data"
    result = collect("--source", clip, "--out", out, "--label", label)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--label" in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "escape").exists()


def test_missing_camera_is_one_line_and_exit_2(tmp_path):
    result = collect("--source", "/dev/video97", "--out", tmp_path / "d", "--label", "x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "camera busy or missing: /dev/video97" in lines[0] and "sudo systemctl stop edge-runtime" in lines[0]


def test_busy_pi_camera_is_one_line_and_exit_2(tmp_path):
    # The picamera2 fake fails its opens the way libcamera does when the service holds the camera.
    env = daemon_env(PYTHONPATH=f"{FAKES}{os.pathsep}{REPO}", FAKE_PICAMERA2_BUSY_OPENS="1000")
    result = collect("--source", "csi://0", "--out", tmp_path / "d", "--label", "x", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "camera busy or missing: csi://0" in lines[0] and "Device or resource busy" in lines[0]
    assert "stop edge-runtime first" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()            # no empty class folder for distill.py to trip over


def test_names_never_collide(tmp_path):
    """Two writers into one folder in the same millisecond with the same counters: every image kept."""
    image = np.zeros((8, 8, 3), np.uint8)
    a, b = Writer(tmp_path, ""), Writer(tmp_path, "")
    paths = [w.save(image) for _ in range(20) for w in (a, b)]
    assert len(set(paths)) == 40 and len(jpegs(tmp_path)) == 40
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".jpg")] == []


# --- planted links (issue 28.6) ---------------------------------------------------------------------

def test_links_planted_at_the_writers_names_are_never_written_through(tmp_path, monkeypatch):
    """Another account on the board plants symlinks to a victim file at the temporary name the writer
    used to use (.collect-<pid>.tmp) and at the next final names (frozen clock): the victim is untouched,
    the links stay links, and every picture is written under a name of its own."""
    import time as time_mod

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "open"
    folder.mkdir()
    (folder / f".collect-{os.getpid()}.tmp").symlink_to(victim)
    now = 1_800_000_000.25
    monkeypatch.setattr(time_mod, "time", lambda: now)
    stamp = time_mod.strftime("%Y%m%d-%H%M%S", time_mod.localtime(now)) + ".250"
    for n in range(1, 4):
        (folder / f"{stamp}_{n:04d}.jpg").symlink_to(victim)            # links to the victim
    (folder / f"{stamp}_0004.jpg").symlink_to(tmp_path / "nowhere")     # a dangling one
    writer = Writer(folder, "")
    paths = [writer.save(np.full((8, 8, 3), 100, np.uint8)) for _ in range(3)]
    assert victim.read_text() == "precious"
    assert [p.name for p in paths] == [f"{stamp}_{n:04d}.jpg" for n in (5, 6, 7)]
    assert all(p.is_file() and not p.is_symlink() and cv2.imread(str(p)) is not None for p in paths)
    links = sorted(p.name for p in folder.iterdir() if p.is_symlink())
    assert len(links) == 5 and not (tmp_path / "nowhere").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


@pytest.mark.parametrize("target", ["outside", "file"])
def test_a_label_folder_that_is_a_symlink_is_refused(tmp_path, target):
    out = tmp_path / "dataset"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    if target == "file":
        outside = tmp_path / "victim.txt"
        outside.write_text("precious")
    (out / "open").symlink_to(outside)
    result = collect("--source", "synthetic://64x48", "--out", out, "--label", "open", "--count", "2",
                     "--every", "0")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "symbolic link" in lines[-1] and "Traceback" not in result.stderr, result.stderr
    if target == "file":
        assert outside.read_text() == "precious"
    else:
        assert list(outside.iterdir()) == []
    # The writer refuses it too, even if the link is planted after the folder was checked.
    with pytest.raises(Exception, match="symbolic link"):
        Writer(out / "open", "").save(np.zeros((8, 8, 3), np.uint8))


def test_a_stream_that_cannot_be_opened_is_one_line_without_its_password(tmp_path):
    port = free_port()          # nothing listens there: the connection is refused at once
    result = collect("--source", f"rtsp://viewer:s3cret@127.0.0.1:{port}/live", "--out", tmp_path / "d",
                     "--label", "x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ERROR") and "cannot open source rtsp://***@127.0.0.1" in lines[-1]
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_live_source_every_is_clock_time(tmp_path):
    """A paced 20 frames/s source, one frame per 0.25 s: the saved pictures are >= 0.2 s apart (the
    file names carry the time of saving to the millisecond)."""
    out = tmp_path / "data"
    result = collect("--source", "synthetic://64x48?fps=20", "--out", out, "--label", "x", "--every", "0.25",
                     "--count", "4")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr) == (4, 0, 4)
    stamps = []
    for f in jpegs(out / "x"):
        hms, ms = re.fullmatch(r"\d{8}-(\d{6})\.(\d{3})_\d{4}\.jpg", f.name).groups()
        stamps.append(int(hms[:2]) * 3600 + int(hms[2:4]) * 60 + int(hms[4:]) + int(ms) / 1000)
    gaps = np.round(np.diff(stamps), 3)     # whole milliseconds: 0.2 must not read 0.19999999999709
    assert len(gaps) == 3 and gaps.min() >= 0.2, gaps


def test_collects_from_the_pi_camera_at_the_size_the_service_asks_for(tmp_path):
    env = daemon_env(PYTHONPATH=f"{FAKES}{os.pathsep}{REPO}", FAKE_PICAMERA2_RGB="255,0,0")
    out = tmp_path / "data"
    result = collect("--source", "csi://0", "--out", out, "--label", "red", "--every", "0", "--min-change", "0",
                     "--count", "2", env=env)
    assert result.returncode == 0, result.stderr
    files = jpegs(out / "red")
    assert len(files) == 2
    image = cv2.imread(str(files[0]))
    assert image.shape == (256, 352, 3)               # the daemon's ISP size for a 224x224 model (resize 256)
    assert image.reshape(-1, 3).mean(0) == pytest.approx([0, 0, 255], abs=3)   # red, in BGR


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_and_keeps_what_was_saved(signum, tmp_path):
    out = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "collect", "--source", "synthetic://64x48?fps=20",
                             "--out", out, "--label", "x", "--every", "0.2"], stderr=subprocess.PIPE, text=True,
                            env=daemon_env(), cwd=REPO)
    try:
        for line in proc.stderr:
            if line.startswith("collect: saved 2 /"):
                break
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait(timeout=10) == 0, rest
    finally:
        proc.kill()
    assert re.search(r"collect: (interrupted|stopped): saved (\d+)", rest)
    saved = int(re.search(r"saved (\d+), skipped", rest).group(1))
    assert saved >= 2 and len(jpegs(out / "x")) == saved
