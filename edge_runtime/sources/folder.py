"""A folder of images, in sorted order; unreadable files are skipped with a counted warning."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2

from ..errors import SourceError
from .base import Frame, SkipFrame, Source

log = logging.getLogger(__name__)

PAUSE_MIN_S = 0.25
PAUSE_MAX_S = 2.0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


class FolderSource(Source):
    kind = "folder"

    def __init__(self, uri: str, folder: Path, loop: bool = False):
        super().__init__(uri)
        self.folder = folder
        self.loop = loop
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
        # IMREAD_COLOR: grey and 16-bit files come back as 8-bit BGR; EXIF orientation is applied.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            self._index += 1          # keep frame numbers equal to positions in the folder
            raise SkipFrame(f"cannot decode image {path}")
        return self._frame(image, path=str(path))
