"""A faithful stand-in for picamera2's Picamera2 class, for machines without libcamera.

It keeps the parts of the real API our adapter uses, with the real behaviours that matter:
- `global_camera_info()` lists the cameras libcamera sees;
- `create_video_configuration(main={"size", "format"}, buffer_count, queue, controls)`;
- "RGB888" arrays are B,G,R in memory and "BGR888" arrays are R,G,B (libcamera's naming);
  "XRGB8888" is B,G,R,X; the array is height x width x channels for the configured size;
- `capture_array(name, wait=False)` returns a job; `wait(job, timeout)` raises TimeoutError when
  no frame arrives in time;
- opening a camera that is busy raises RuntimeError, like libcamera's "Device or resource busy".

Scene and faults come from the environment so a daemon subprocess can use it too:
FAKE_PICAMERA2_CAMERAS (count, default 1), FAKE_PICAMERA2_RGB ("r,g,b" scene colour),
FAKE_PICAMERA2_STALL_AFTER (frames per open before the camera stalls), FAKE_PICAMERA2_BUSY_OPENS
(opens that fail first), FAKE_PICAMERA2_LOG (a file that records calls, one per line).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

_lock = threading.Lock()
_opens = 0
FORMATS = {"RGB888": (2, 1, 0), "BGR888": (0, 1, 2), "XRGB8888": (2, 1, 0, None), "XBGR8888": (0, 1, 2, None)}


def _env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _record(line: str) -> None:
    path = os.environ.get("FAKE_PICAMERA2_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


class _Job:
    def __init__(self, name):
        self.name = name


class Picamera2:
    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708", "Location": 2, "Num": i} for i in range(_env_int("FAKE_PICAMERA2_CAMERAS", 1))]

    def __init__(self, camera_num=0):
        global _opens
        if camera_num >= len(self.global_camera_info()):
            raise IndexError("list index out of range")   # what the real class does for a missing camera
        with _lock:
            _opens += 1
            busy = _opens <= _env_int("FAKE_PICAMERA2_BUSY_OPENS", 0)
        _record(f"open {camera_num}")
        if busy:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_num = camera_num
        self.config = None
        self.started = False
        self.closed = False
        self._frames = 0
        self._stall_after = _env_int("FAKE_PICAMERA2_STALL_AFTER", -1)
        rgb = os.environ.get("FAKE_PICAMERA2_RGB", "255,0,0")
        self._rgb = tuple(int(v) for v in rgb.split(","))

    def create_video_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                   buffer_count=6, controls=None, display="main", encode="main", queue=True,
                                   sensor=None, use_case="video"):
        main = dict(main or {})
        main.setdefault("size", (1280, 720))
        main.setdefault("format", "XBGR8888")
        if main["format"] not in FORMATS and main["format"] != "YUV420":
            raise RuntimeError(f"Format {main['format']} not supported")
        return {"use_case": use_case, "main": main, "lores": lores, "buffer_count": buffer_count,
                "queue": queue, "controls": dict(controls or {})}

    def configure(self, config):
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.config = config
        _record(f"configure {config['main']['format']} {tuple(config['main']['size'])} queue={config['queue']}")

    def start(self):
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.started = False
        self.closed = True
        _record("close")

    def _make_array(self, name):
        width, height = self.config[name]["size"]
        order = FORMATS[self.config[name]["format"]]
        pixel = [self._rgb[i] if i is not None else 255 for i in order]
        return np.tile(np.array(pixel, np.uint8), (height, width, 1))

    def capture_array(self, name="main", wait=None, signal_function=None):
        if not self.started:
            raise RuntimeError("Camera not started")
        job = _Job(name)
        if wait is False:
            return job
        return self.wait(job, timeout=None if wait in (None, True) else wait)

    def wait(self, job, timeout=None):
        if 0 <= self._stall_after <= self._frames:
            time.sleep(timeout if timeout is not None else 3600)
            raise TimeoutError("Timed out waiting for frame")
        time.sleep(1 / 120)   # a camera delivers frames at its own pace
        self._frames += 1
        return self._make_array(job.name)
