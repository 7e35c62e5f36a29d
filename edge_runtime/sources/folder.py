"""A folder of images, in sorted order; unreadable files are skipped with a counted warning."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from ..errors import SourceError
from .base import Frame, SkipFrame, Source

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


class FolderSource(Source):
    kind = "folder"

    def __init__(self, uri: str, folder: Path, loop: bool = False):
        super().__init__(uri)
        self.folder = folder
        self.loop = loop
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        try:
            self._files = sorted(p for p in self.folder.iterdir()
                                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise SourceError(f"cannot list folder {self.folder}: {exc.strerror or exc}") from None
        if not self._files:
            raise SourceError(f"folder {self.folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._pos = 0

    def read(self) -> Frame | None:
        if self._pos >= len(self._files):
            if not self.loop:
                return None
            self._pos = 0
        path = self._files[self._pos]
        self._pos += 1
        # IMREAD_COLOR: grey and 16-bit files come back as 8-bit BGR; EXIF orientation is applied.
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            self._index += 1          # keep frame numbers equal to positions in the folder
            raise SkipFrame(f"cannot decode image {path}")
        return self._frame(image, path=str(path))
