"""A folder of images, in sorted order; unreadable files are skipped with a counted warning."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.util import safeio
from edge_runtime.util.errors import SourceError
from .base import Frame, SkipFrame, Source
from .imagesize import image_size

log = logging.getLogger(__name__)

PAUSE_MIN_S = 0.25
PAUSE_MAX_S = 2.0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
DEFAULT_MAX_PIXELS = 50_000_000     # config capture.max_image_pixels; see config.py


def max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading: an uncompressed 8-bit RGB image of max_pixels, plus headers."""
    return 3 * max_pixels + (1 << 20)


class FolderSource(Source):
    kind = "folder"

    def __init__(self, uri: str, folder: Path, loop: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(uri)
        self.folder = folder
        self.loop = loop
        self.max_pixels = max_pixels
        self._files: list[Path] = []
        self._pos = 0
        self._decoded = False           # this pass has yielded a frame
        self._pause = 0.0
        self._pause_warned = False

    def open(self) -> None:
        try:
            self._files = sorted(p for p in self.folder.iterdir()
                                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise SourceError(f"cannot list folder {self.folder}: {exc.strerror or exc}") from None
        if not self._files:
            raise SourceError(f"folder {self.folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._pos = 0

    def _frame(self, image, path: str | None = None) -> Frame:
        self._decoded = True
        return super()._frame(image, path)

    def _pause_if_fruitless(self) -> None:
        """--loop over a folder where nothing decodes must not spin at 100% CPU: pause between
        fruitless passes, doubling up to PAUSE_MAX_S (short enough for a prompt SIGTERM)."""
        if self._decoded:
            self._decoded, self._pause = False, 0.0
            return
        self._pause = min(max(2 * self._pause, PAUSE_MIN_S), PAUSE_MAX_S)
        if not self._pause_warned:
            self._pause_warned = True
            log.warning("folder %s: no image in it could be decoded in a whole pass; looping with a pause of "
                        "up to %.0f s between passes", self.folder, PAUSE_MAX_S)
        time.sleep(self._pause)

    def read(self) -> Frame | None:
        if self._pos >= len(self._files):
            if not self.loop:
                return None
            self._pause_if_fruitless()
            self._pos = 0
        path = self._files[self._pos]
        self._pos += 1
        name = safeio.display_path(path)      # valid UTF-8 for logs and the JSON `path`, whatever the bytes
        try:
            image = self._decode(path, name)
        except SkipFrame:
            self._index += 1          # keep frame numbers equal to positions in the folder
            raise
        return self._frame(image, path=name)

    def _decode(self, path: Path, name: str) -> np.ndarray:
        # Bytes + imdecode, never cv2.imread(path): OpenCV's path readers crash on names that are not
        # UTF-8, and the header is checked before anything is decoded (a 1 MB PNG can declare 900 Mpx).
        try:
            data = safeio.read_bytes(path, limit=max_file_bytes(self.max_pixels))
        except OSError as exc:
            raise SkipFrame(f"cannot read image {name}: {exc.strerror or exc}") from None
        size = image_size(data)
        if size is not None and size[0] * size[1] > self.max_pixels:
            raise SkipFrame(f"image {name} is {size[0]}x{size[1]} pixels, above the limit of "
                            f"{self.max_pixels} (capture.max_image_pixels)")
        # IMREAD_COLOR: grey and 16-bit files come back as 8-bit BGR; EXIF orientation is applied.
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            image = None              # above OpenCV's own limit, or out of memory
        if image is None:
            raise SkipFrame(f"cannot decode image {name}")
        return image
