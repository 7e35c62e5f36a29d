"""Sources read through OpenCV's VideoCapture: video files, V4L2 cameras and network streams."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2

from edge_runtime.util.errors import SourceError
from .base import Frame, Source, SourceLost

log = logging.getLogger(__name__)


DECODE_THREADS = 1


class VideoFileSource(Source):
    """A video file, frame by frame. `realtime` paces it at its own frame rate; `loop` restarts it."""

    kind = "file"

    def __init__(self, uri: str, path: Path, loop: bool = False, realtime: bool = False):
        super().__init__(uri)
        self.path, self.loop, self.realtime = path, loop, realtime
        self._cap: cv2.VideoCapture | None = None
        self._interval = 0.0
        self._next_due = 0.0
        self._frames_this_pass = 0

    def open(self) -> None:
        if not self.path.exists():
            raise SourceError(f"video file {self.path} does not exist")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"video file {self.path} is not readable")
        # One decoder thread: the cores are already busy with inference (lanes), and FFmpeg's frame
        # threading costs more CPU per frame in total (H.264 640x480: 0.88 vs 0.65 ms; daemon +11-16%
        # frames/s on 2 cores, docs/BENCHMARKS.md).
        self._cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])
        if not self._cap.isOpened():
            self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"OpenCV cannot open {self.path} as a video (not a video, or a codec "
                              f"this OpenCV build lacks)")
        fps = self._cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._interval = 1.0 / fps if self.realtime and 0 < fps < 1000 else 0.0
        self._next_due = time.perf_counter()
        self._frames_this_pass = 0

    def read(self) -> Frame | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok:
            if self._frames_this_pass == 0:
                raise SourceError(f"{self.path}: no frame could be decoded (empty or corrupt video)")
            if not self.loop:
                return None
            self.close()
            self.open()
            ok, image = self._cap.read()
            if not ok:
                return None
        self._frames_this_pass += 1
        if self._interval:
            self._next_due += self._interval
            delay = self._next_due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return self._frame(image)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class LiveCaptureSource(Source):
    """A V4L2 camera or an RTSP/HTTP stream: live, newest frame wins, reopened when lost."""

    live = True

    def __init__(self, uri: str, target: str | int, backend: int, kind: str,
                 width: int | None = None, height: int | None = None, fps: float | None = None,
                 timeout_s: float = 5.0):
        super().__init__(uri)
        self.target, self.backend, self.kind = target, backend, kind
        self.width, self.height, self.fps = width, height, fps
        self.timeout_s = timeout_s
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        params = []
        if self.backend == cv2.CAP_FFMPEG:
            # Without these, a dead RTSP/HTTP server blocks open()/read() for ~30 s or forever.
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.target, self.backend, params)
        if not cap.isOpened():
            cap.release()
            raise SourceLost(f"cannot open {self.uri}")
        if self.backend == cv2.CAP_V4L2:
            # One driver buffer: the frame we read is the newest, not one queued seconds ago.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceLost(f"{self.uri} is not open")
        ok, image = self._cap.read()
        if not ok or image is None:
            raise SourceLost(f"{self.uri} delivered no frame")
        return self._frame(image)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def v4l2_device(path: str) -> str:
    """Refuse clearly when a /dev/videoN node is missing (no camera plugged in)."""
    if not Path(path).exists():
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        raise SourceError(f"{path} does not exist (camera devices present: {', '.join(present) or 'none'})")
    return path
