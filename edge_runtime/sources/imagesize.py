"""An image's width and height from its header, before anything decodes it.

A 1 MB PNG can declare 30000x30000 pixels: OpenCV would then allocate 2.7 GB to decode it. The folder
source reads the size here first and skips what is above the pixel limit. Formats: PNG, JPEG, BMP,
GIF, WebP, TIFF and PNM (PBM/PGM/PPM/PAM); for anything else `image_size` returns None and OpenCV's
own limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30) is all that applies.
"""

from __future__ import annotations

import re
import struct

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM = re.compile(rb"P([1-6])(?:\s+|#[^\n]*\n)*?(\d+)(?:\s+|#[^\n]*\n)+?(\d+)")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by the header, or None for a format or header this does not read."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff(data)
        if data[:2] == b"P7":
            w = re.search(rb"\nWIDTH\s+(\d+)", data[:4096])
            h = re.search(rb"\nHEIGHT\s+(\d+)", data[:4096])
            return (int(w.group(1)), int(h.group(1))) if w and h else None
        m = _PNM.match(data[:4096])
        if m:
            return int(m.group(2)), int(m.group(3))
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:              # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:    # markers without a length
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return w, h
        pos += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    """Width and height of the largest image in the file (OpenCV may decode any page)."""
    end = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(end + "I", data[4:8])[0]
    best = None
    seen = set()
    while offset and offset not in seen and len(seen) < 64:
        seen.add(offset)
        count = struct.unpack(end + "H", data[offset:offset + 2])[0]
        size = {}
        for i in range(count):
            entry = data[offset + 2 + 12 * i:offset + 14 + 12 * i]
            tag, kind = struct.unpack(end + "HH", entry[:4])
            if tag in (256, 257):
                value = struct.unpack(end + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
                size[tag] = value
        if 256 not in size or 257 not in size:
            return None
        if best is None or size[256] * size[257] > best[0] * best[1]:
            best = (size[256], size[257])
        next_at = offset + 2 + 12 * count
        offset = struct.unpack(end + "I", data[next_at:next_at + 4])[0]
    return best
