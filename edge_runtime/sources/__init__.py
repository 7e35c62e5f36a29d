"""Sources chosen by one string: `csi://0`, `/dev/video0`, `clip.mp4`, `rtsp://…`, `synthetic://640x480`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2

from edge_runtime.util import safeio
from edge_runtime.util.errors import SourceError
from .base import Frame, SkipFrame, Source, SourceLost
from .folder import DEFAULT_MAX_PIXELS, FolderSource
from .opencv import LiveCaptureSource, VideoFileSource, v4l2_device
from .picamera import PiCameraSource, import_picamera2, isp_size
from .synthetic import SyntheticSource, parse_size

__all__ = ["Frame", "Source", "SourceLost", "SkipFrame", "SourceOptions", "open_source", "camera_uri"]


@dataclass(frozen=True)
class SourceOptions:
    loop: bool = False
    realtime: bool = False
    width: int | None = None            # capture size asked of cameras (None: near the model's size)
    height: int | None = None
    fps: float | None = None
    timeout_s: float = 5.0              # a live capture that takes longer is treated as lost
    model_size: tuple[int, int] = (224, 224)
    model_resize: int | None = 256
    max_image_pixels: int = DEFAULT_MAX_PIXELS   # folder images above this are skipped, never decoded


def camera_uri(index: int, dt_model_path: str = "/proc/device-tree/model") -> str:
    """--camera N: the Pi camera through picamera2 on a Pi, /dev/videoN elsewhere."""
    tried = []
    try:
        model = Path(dt_model_path).read_text(errors="replace")
    except OSError:
        model = ""
    if "Raspberry Pi" in model:
        try:
            Picamera2 = import_picamera2()
            if index < len(Picamera2.global_camera_info()):
                return f"csi://{index}"
            tried.append(f"picamera2 sees no camera {index}")
        except SourceError as exc:
            tried.append(str(exc))
    else:
        tried.append("not a Raspberry Pi, so no picamera2")
    device = f"/dev/video{index}"
    if Path(device).exists():
        return device
    tried.append(f"{device} does not exist")
    raise SourceError(f"no camera {index}: " + "; ".join(tried) + ". Without a camera, try --source "
                      "synthetic://640x480 (a moving test pattern), a video file or a folder of images")


def open_source(uri: str, options: SourceOptions) -> Source:
    """Make (not yet open) the source that `uri` names."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "synthetic":
        width, height = parse_size(parts.netloc or parts.path.lstrip("/"), uri)
        query = parse_qs(parts.query)
        fps = None
        if "fps" in query:
            try:
                fps = float(query["fps"][0])
            except ValueError:
                fps = -1.0
            if not 0 < fps <= 1000:
                raise SourceError(f"{uri}: fps must be a number between 0 and 1000")
        return SyntheticSource(uri, width, height, fps)
    if scheme == "csi":
        try:
            index = int(parts.netloc or parts.path.lstrip("/") or 0)
        except ValueError:
            raise SourceError(f"{uri}: expected csi://N with a camera number") from None
        if options.width and options.height:
            size = (options.width, options.height)
        else:
            size = isp_size(options.model_size, options.model_resize)
        return PiCameraSource(uri, index, size, options.fps, timeout_s=min(options.timeout_s, 5.0))
    if scheme in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp", "srt"):
        return LiveCaptureSource(uri, uri, cv2.CAP_FFMPEG, "stream", timeout_s=options.timeout_s)
    if scheme == "v4l2" or uri.startswith("/dev/video"):
        device = v4l2_device(parts.path if scheme == "v4l2" else uri)
        return LiveCaptureSource(uri, device, cv2.CAP_V4L2, "v4l2", options.width, options.height,
                                 options.fps, timeout_s=options.timeout_s)
    if scheme in ("", "file"):
        path = Path(parts.path if scheme == "file" else uri).expanduser()
        if path.is_dir():
            return FolderSource(uri, path, loop=options.loop, max_pixels=options.max_image_pixels)
        if not path.exists():
            raise SourceError(f"source {uri}: no such file or folder")
        check_video_path(uri, path)
        return VideoFileSource(uri, path, loop=options.loop, realtime=options.realtime)
    raise SourceError(f"source {uri}: unknown scheme '{scheme}' (use csi://N, /dev/videoN, v4l2://, "
                      "a file or folder path, file://, rtsp://, http:// or synthetic://WxH)")


def check_video_path(uri: str, path: Path) -> None:
    """Refuse, before OpenCV sees it, a video path it would crash on (a name that is not UTF-8) or
    block on forever (a FIFO, /dev/zero, a socket)."""
    if not safeio.utf8_name(path):
        raise SourceError(f"source {safeio.display_path(uri)}: the file name is not valid UTF-8, which OpenCV "
                          "cannot open; rename the file")
    try:
        safeio.check_regular(path)
    except OSError as exc:
        raise SourceError(f"source {safeio.display_path(uri)}: {exc.strerror or exc}") from None
