"""Image folders, read exactly as the runtime reads frames: cv2.imread (BGR) -> edge_runtime Preprocessor.

No torch here: quantize.py uses this too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from edge_runtime.engines.spec import InputSpec
from edge_runtime.engines.preprocess import Preprocessor

from .common import ToolError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _check_dir(folder: Path, what: str) -> None:
    if not folder.exists():
        raise ToolError(f"{what} {folder}: folder not found")
    if not folder.is_dir():
        raise ToolError(f"{what} {folder}: not a folder")


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Every image under `folder` (recursively), sorted; an error when there is none."""
    folder = Path(folder)
    _check_dir(folder, what)
    images = sorted(p for p in folder.rglob("*") if is_image(p))
    if not images:
        raise ToolError(f"{what} {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def class_folders(folder: str | Path, ignore: Sequence[str] = ()) -> tuple[list[str], list[tuple[Path, int]]]:
    """An ImageFolder layout (one sub-folder per class) -> (class names, [(image, class index)]).
    Sub-folders named in `ignore` (e.g. collect's "unlabeled") are not classes."""
    folder = Path(folder)
    _check_dir(folder, "--data")
    classes = sorted(d.name for d in folder.iterdir()
                     if d.is_dir() and not d.name.startswith(".") and d.name not in ignore)
    samples: list[tuple[Path, int]] = []
    empty = []
    for index, name in enumerate(classes):
        images = sorted(p for p in (folder / name).rglob("*") if is_image(p))
        if not images:
            empty.append(name)
        samples += [(p, index) for p in images]
    if len(classes) < 2:
        raise ToolError(f"--data {folder}: expected one sub-folder per class (at least 2), found {len(classes)}")
    if empty:
        raise ToolError(f"--data {folder}: class folder(s) with no images: {', '.join(empty)}")
    return classes, samples


def read_bgr(path: Path) -> np.ndarray:
    """cv2.imread, as the runtime's folder source does; a clear error for a file OpenCV cannot decode."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ToolError(f"image {path}: OpenCV cannot decode it")
    return image


def preprocessed(paths: Sequence[Path], spec: InputSpec) -> Iterator[np.ndarray]:
    """(1, ...) model inputs, one per image, made by the runtime's own Preprocessor."""
    prep = Preprocessor(spec)
    for path in paths:
        yield prep(read_bgr(path))   # a fresh buffer each call


def spread(paths: Sequence[Path], limit: int) -> list[Path]:
    """At most `limit` paths, evenly spread over the sorted list (so every class folder is sampled)."""
    if len(paths) <= limit:
        return list(paths)
    step = len(paths) / limit
    return [paths[int(i * step)] for i in range(limit)]
