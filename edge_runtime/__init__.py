"""edge_runtime: on-device image classification — camera → OpenCV → onnxruntime → JSON, MQTT, HTTP."""

__version__ = "0.1.0"

import os as _os

# OpenCV and its FFmpeg backend print every failed reconnect to stderr (the journal) on their own;
# the daemon logs each loss and recovery once itself. Set before cv2 is imported anywhere.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # AV_LOG_QUIET
