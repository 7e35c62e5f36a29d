"""Sources: URI parsing, each source's behaviour, and the picamera2 adapter against a faithful fake."""

from __future__ import annotations

import os
import sys
import threading

import cv2
import numpy as np
import pytest

from conftest import REPO, daemon_env, run_daemon, start_daemon
from edge_runtime.util.errors import SourceError
from edge_runtime.engines.spec import InputSpec
from edge_runtime.engines.preprocess import Preprocessor
from edge_runtime.sources import SourceLost, SourceOptions, camera_uri, open_source
from edge_runtime.sources.folder import FolderSource
from edge_runtime.sources.opencv import LiveCaptureSource, VideoFileSource
from edge_runtime.sources.picamera import PiCameraSource, isp_size
from edge_runtime.sources.synthetic import SyntheticSource

FAKES = REPO / "tests" / "fakes"


@pytest.fixture
def fake_picamera2(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_PICAMERA2_LOG", str(log))
    import picamera2
    monkeypatch.setattr(picamera2, "_opens", 0)
    return log


def test_uri_dispatch(tmp_path, video_file):
    opts = SourceOptions()
    assert isinstance(open_source("synthetic://320x240", opts), SyntheticSource)
    assert open_source("synthetic://320x240?fps=15", opts).live
    assert not open_source("synthetic://320x240", opts).live
    assert isinstance(open_source(str(video_file), opts), VideoFileSource)
    assert isinstance(open_source(f"file://{video_file}", opts), VideoFileSource)
    assert isinstance(open_source(str(tmp_path), opts), FolderSource)
    rtsp = open_source("rtsp://127.0.0.1:8554/cam", opts)
    assert isinstance(rtsp, LiveCaptureSource) and rtsp.live and rtsp.kind == "stream"
    assert isinstance(open_source("csi://1", opts), PiCameraSource)
    with pytest.raises(SourceError, match="fps must be"):
        open_source("synthetic://320x240?fps=0", opts)
    with pytest.raises(SourceError, match="does not exist"):
        open_source("v4l2:///dev/video99", opts)


def test_video_file_decodes_in_one_thread(tmp_path):
    # FFmpeg's default frame threading (a thread per core) costs more CPU per frame in total, on cores
    # inference already fills. MPEG-4 part 2, because FFmpeg threads it by default (MJPEG it does not).
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((240, 320, 3), 40 * i, np.uint8))
    writer.release()
    src = VideoFileSource(str(path), path)
    src.open()
    try:
        assert src.read().image.shape == (240, 320, 3)
        assert src._cap.get(cv2.CAP_PROP_N_THREADS) == 1
    finally:
        src.close()


def test_camera_uri_off_a_pi_names_what_was_tried(tmp_path):
    with pytest.raises(SourceError) as err:
        camera_uri(5, dt_model_path=str(tmp_path / "no-model"))
    assert "not a Raspberry Pi" in str(err.value) and "/dev/video5 does not exist" in str(err.value)


def test_camera_uri_on_a_pi_prefers_picamera2(tmp_path, fake_picamera2):
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    assert camera_uri(0, dt_model_path=str(model)) == "csi://0"


def test_synthetic_frames_move_and_have_the_right_size():
    src = SyntheticSource("synthetic://64x48", 64, 48, None)
    src.open()
    a, b = src.read(), src.read()
    assert a.image.shape == (48, 64, 3) and a.image.dtype == np.uint8
    assert (a.index, b.index) == (0, 1) and not np.array_equal(a.image, b.image)


def test_isp_size_is_just_big_enough_for_the_model():
    w, h = isp_size((224, 224), 256)
    assert h >= 256 and w >= 256 * 4 / 3 and w % 32 == 0 and h % 2 == 0
    assert w * h < 1280 * 720 / 2            # far below a 720p frame: the ISP does the scaling
    assert isp_size((224, 224), None) == (320, 224)


def test_picamera_adapter_asks_for_rgb888_near_model_size_and_gets_bgr(fake_picamera2, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_RGB", "250,10,0")       # a red scene
    src = open_source("csi://0", SourceOptions(model_size=(224, 224), model_resize=256))
    src.open()
    frame = src.read()
    src.close()
    assert frame.image.shape[2] == 3
    b, g, r = frame.image[0, 0]
    assert (r, g, b) == (250, 10, 0)                         # OpenCV BGR order, no conversion needed
    calls = fake_picamera2.read_text().splitlines()
    assert calls[0] == "open 0" and calls[1].startswith("configure RGB888 (352, 256) queue=False")
    tensor = Preprocessor(InputSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1)))(frame.image)
    assert tensor[0, 0].mean() > 0.9 and tensor[0, 2].mean() < 0.1   # the model sees red in channel R


def test_picamera_stall_times_out_instead_of_hanging(fake_picamera2, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_STALL_AFTER", "2")
    src = PiCameraSource("csi://0", 0, (320, 240), timeout_s=0.2)
    src.open()
    src.read()
    src.read()
    with pytest.raises(SourceLost, match="no frame within 0.2 s"):
        src.read()
    src.close()


def test_missing_pi_camera_is_a_clear_error(fake_picamera2, monkeypatch):
    monkeypatch.setenv("FAKE_PICAMERA2_CAMERAS", "0")
    with pytest.raises(SourceError, match="libcamera sees 0 camera"):
        PiCameraSource("csi://0", 0, (320, 240)).open()


def test_picamera2_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="apt install python3-picamera2"):
        PiCameraSource("csi://0", 0, (320, 240)).open()


def test_daemon_on_fake_pi_camera_recovers_from_busy_and_stalls(channel_model, tmp_path):
    """csi://0 end to end: the camera is busy twice, then stalls after every 15 frames; the daemon
    keeps going, counts the reconnects and always sees red."""
    log = tmp_path / "calls.log"
    env = daemon_env(PYTHONPATH=f"{FAKES}{os.pathsep}{REPO}", FAKE_PICAMERA2_RGB="255,0,0",
                     FAKE_PICAMERA2_BUSY_OPENS="2", FAKE_PICAMERA2_STALL_AFTER="15", FAKE_PICAMERA2_LOG=str(log))
    config = tmp_path / "config.yaml"
    config.write_text("capture: {timeout: 0.3, reconnect_initial_delay: 0.1, reconnect_max_delay: 0.2}\n")
    result = run_daemon("--source", "csi://0", "--model", channel_model, "--config", config,
                        "--max-frames", "40", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {p["top"][0]["label"] for p in result.predictions} == {"red"}
    final = result.stats[-1]
    assert final["source_reconnects"] >= 3            # 1 after the busy opens + 2 stalls
    assert result.stderr.count("source lost") >= 3 and "source recovered" in result.stderr
    assert log.read_text().count("open 0") >= 5


def test_sigterm_during_a_reconnect_wait(channel_model, tmp_path):
    env = daemon_env(PYTHONPATH=f"{FAKES}{os.pathsep}{REPO}", FAKE_PICAMERA2_BUSY_OPENS="1000")
    proc = start_daemon("--source", "csi://0", "--model", channel_model, env=env)
    done = threading.Event()
    threading.Timer(2.0, lambda: (proc.terminate(), done.set())).start()
    out, err = proc.communicate(timeout=10)
    assert done.is_set() and proc.returncode == 0, err
    assert "Device or resource busy" in err and '"final":true' in out
