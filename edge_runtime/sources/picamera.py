"""csi://N: a Raspberry Pi camera through picamera2 (apt's python3-picamera2, Pi OS only).

Things users get wrong, handled here:
- libcamera's "RGB888" is B,G,R in memory (what OpenCV calls BGR) and "BGR888" is R,G,B. We ask
  for RGB888 and hand the array to OpenCV as BGR with no conversion.
- The ISP scales for free: we ask for a frame near the model's input size, so the CPU never
  resizes a 1080p frame.
- Every capture has a timeout, so a stalled camera cannot hang the daemon; the capture thread
  then reopens it.
"""

from __future__ import annotations

import importlib
import logging
import math

import numpy as np

from edge_runtime.util.errors import SourceError
from .base import Frame, Source, SourceLost

log = logging.getLogger(__name__)


def import_picamera2():
    """The Picamera2 class, or SourceError saying how to get it."""
    try:
        return importlib.import_module("picamera2").Picamera2
    except ImportError as exc:
        raise SourceError(
            f"picamera2 is not importable ({exc}); it exists only on Raspberry Pi OS: "
            "`sudo apt install python3-picamera2` and a venv made with --system-site-packages "
            "(install.sh does both)") from None


def isp_size(model_size: tuple[int, int], resize: int | None, sensor_aspect: float = 4 / 3) -> tuple[int, int]:
    """(width, height) to ask the ISP for: the smallest frame at the sensor's aspect ratio whose
    shorter side covers what preprocessing needs. Width is rounded up to 32 and height to 2,
    which every Pi ISP accepts."""
    h, w = model_size
    shorter = max(resize or 0, h, w)
    if sensor_aspect >= 1:
        height = shorter
        width = max(w, math.ceil(shorter * sensor_aspect))
    else:
        width = shorter
        height = max(h, math.ceil(shorter / sensor_aspect))
    return -(-width // 32) * 32, -(-height // 2) * 2


class PiCameraSource(Source):
    live = True
    kind = "picamera2"

    def __init__(self, uri: str, camera_num: int, size: tuple[int, int], fps: float | None = None,
                 timeout_s: float = 2.0):
        super().__init__(uri)
        self.camera_num = camera_num
        self.size = size            # (width, height) requested from the ISP
        self.fps = fps
        self.timeout_s = timeout_s
        self._cam = None

    def open(self) -> None:
        Picamera2 = import_picamera2()
        cameras = Picamera2.global_camera_info()
        if self.camera_num >= len(cameras):
            # Not a glitch: there is no such camera. Refuse like a bad config.
            raise SourceError(f"csi://{self.camera_num}: libcamera sees {len(cameras)} camera(s)"
                              + (f": {', '.join(str(c.get('Model', '?')) for c in cameras)}" if cameras else
                                 " (is the ribbon cable seated? `rpicam-hello --list-cameras` checks)"))
        try:
            cam = Picamera2(self.camera_num)
            controls = {"FrameRate": float(self.fps)} if self.fps else {}
            # queue=False: never hand out a frame that waited in a queue; we want the newest.
            config = cam.create_video_configuration(
                main={"size": self.size, "format": "RGB888"}, buffer_count=4, queue=False,
                controls=controls)
            cam.configure(config)
            cam.start()
        except Exception as exc:  # libcamera raises RuntimeError and friends on a busy/absent camera
            raise SourceLost(f"csi://{self.camera_num}: cannot start camera: {exc}") from None
        self._cam = cam

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceLost(f"csi://{self.camera_num} is not open")
        try:
            job = self._cam.capture_array("main", wait=False)
            image = self._cam.wait(job, timeout=self.timeout_s)
        except TimeoutError:
            raise SourceLost(f"csi://{self.camera_num}: no frame within {self.timeout_s:.1f} s") from None
        except Exception as exc:
            raise SourceLost(f"csi://{self.camera_num}: capture failed: {exc}") from None
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 4:   # XRGB8888 padding, if a config asked for it
            image = image[:, :, :3]
        return self._frame(image)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            for step in (cam.stop, cam.close):
                try:
                    step()
                except Exception as exc:  # closing a dead camera must not stop a reopen
                    log.debug("closing csi://%d: %s", self.camera_num, exc)
