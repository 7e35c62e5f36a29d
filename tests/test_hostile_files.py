"""Hostile input files: odd names, decompression bombs, files that are not files, text that is not UTF-8.

Each case runs the real daemon and asserts what the user sees: the exit code, one clear error line
(or a counted skip and the final stats line), and a peak-RSS bound where memory is the point.
All inputs are generated here.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, daemon_env
from tiny_model import make_random_model

RSS_BOUND_MB = 400        # the daemon on a tiny model takes ~100 MB; a decoded bomb 1.2-2.7 GB


def run_measured(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run the daemon under a fresh wrapper whose only child it is, and return its peak RSS (MB)."""
    wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "edge_runtime", *map(str, args)],
                          capture_output=True, timeout=timeout, env=daemon_env(), cwd=REPO)
    out = proc.stdout.decode("utf-8")           # strict: the daemon's stdout must be valid UTF-8
    err = proc.stderr.decode("utf-8", "replace")
    lines = err.splitlines()
    peak = int(lines[-1].split()[-1]) / 1024
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "\n".join(lines[:-1])), peak


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or "Traceback" in line]


def final_stats(stdout: str) -> dict:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    stats = [x for x in lines if x["type"] == "stats"]
    assert stats and stats[-1].get("final"), "no final stats line"
    return stats[-1]


def small_image(ext: str = ".png") -> bytes:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (0, 0, 255)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid grey PNG of width x height zeros: ~1 KB per Mpx on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    co = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(co.compress(row) for _ in range(height)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims width x height, cut after its first scan header:
    libjpeg pads the missing data, so OpenCV would allocate and fill the whole image."""
    data = bytearray(small_image(".jpg"))
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
    sos = data.index(b"\xff\xda")
    return bytes(data[:sos + 200])


def bmp_bomb(width: int, height: int) -> bytes:
    """A 24-bit BMP header for width x height with almost no pixel data."""
    header = struct.pack("<2sIHHI", b"BM", 54 + 1024, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\0" * 1024


# --- names that are not UTF-8 -------------------------------------------------------------------

def test_image_names_that_are_not_utf8_are_read_and_shown_escaped(tiny_model, tmp_path):
    folder = os.fsencode(tmp_path / "imgs")
    os.mkdir(folder)
    for name in (b"a\xff.png", b"b\xfe\xfd.jpg", b"c-\xe9t\xe9.png", b"d-ok.png"):    # Latin-1 "été" too
        with open(os.path.join(folder, name), "wb") as f:
            f.write(small_image(os.path.splitext(name)[1].decode()))
    result, _ = run_measured("--model", tiny_model, "--source", os.fsdecode(folder), "--batch", "1")
    assert result.returncode == 0, result.stderr                    # was -11 (SIGSEGV) in cv2.imread
    stats = final_stats(result.stdout)
    assert stats["frames_processed"] == 4 and stats["frames_skipped"] == 0
    paths = sorted(json.loads(line)["path"] for line in result.stdout.splitlines() if '"prediction"' in line)
    assert [Path(p).name for p in paths] == ["a\\xff.png", "b\\xfe\\xfd.jpg", "c-\\xe9t\\xe9.png", "d-ok.png"]


@pytest.mark.parametrize("kind", ["video", "model"])
def test_video_or_model_name_not_utf8_is_refused_in_one_line(kind, tiny_model, video_file, tmp_path):
    target = os.path.join(os.fsencode(tmp_path), b"x\xff" + (b".avi" if kind == "video" else b".onnx"))
    with open(target, "wb") as f:
        f.write(Path(video_file if kind == "video" else tiny_model).read_bytes())
    args = ["--model", os.fsdecode(target), "--source", "synthetic://64x48"] if kind == "model" else \
        ["--model", tiny_model, "--source", os.fsdecode(target)]
    result, _ = run_measured(*args, "--validate-config")
    assert result.returncode == 2, result.stderr                    # video was -11 (SIGSEGV)
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "not valid UTF-8" in errors[0] and "x\\xff" in errors[0], result.stderr


# --- decompression bombs --------------------------------------------------------------------------

def test_decompression_bombs_are_skipped_unread_and_counted(tiny_model, tmp_path):
    folder = tmp_path / "bombs"
    folder.mkdir()
    (folder / "a_png_bomb.png").write_bytes(png_bomb(12000, 12000))         # 144 Mpx, ~150 KB
    (folder / "b_jpeg_bomb.jpg").write_bytes(jpeg_bomb(30000, 30000))       # 900 Mpx, < 1 KB
    (folder / "c_bmp_bomb.bmp").write_bytes(bmp_bomb(20000, 20000))         # 400 Mpx, 1 KB
    (folder / "d_fine.png").write_bytes(small_image())
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    result, peak_mb = run_measured("--model", tiny_model, "--source", folder, "--batch", "1")
    assert result.returncode == 0, result.stderr
    stats = final_stats(result.stdout)
    assert stats["frames_processed"] == 1 and stats["frames_skipped"] == 3
    for name, size in (("a_png_bomb.png", "12000x12000"), ("b_jpeg_bomb.jpg", "30000x30000"),
                       ("c_bmp_bomb.bmp", "20000x20000")):
        assert f"{name} is {size} pixels, above the limit" in result.stderr
    assert "Traceback" not in result.stderr
    assert peak_mb < RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"      # was 5.3 GB for one 30000x30000 PNG


def test_pixel_limit_is_configurable(tiny_model, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "small.png").write_bytes(small_image())                   # 64x48 = 3072 px
    (folder / "tiny.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    with open(folder / "z_sparse.png", "wb") as f:      # 4 MB of nothing: more bytes than 1000 px can need
        f.truncate(4 << 20)
    config = tmp_path / "c.yaml"
    config.write_text("capture:\n  max_image_pixels: 1000\n")
    result, _ = run_measured("--config", config, "--model", tiny_model, "--source", folder, "--batch", "1")
    assert result.returncode == 0, result.stderr
    stats = final_stats(result.stdout)
    assert stats["frames_processed"] == 1 and stats["frames_skipped"] == 2
    assert "small.png is 64x48 pixels, above the limit of 1000" in result.stderr
    assert "z_sparse.png: is larger than 1 MB" in result.stderr
    config.write_text("capture:\n  max_image_pixels: 0\n")
    result, _ = run_measured("--config", config, "--model", tiny_model, "--source", folder, "--validate-config")
    assert result.returncode == 2 and "capture.max_image_pixels" in result.stderr


# --- files that are not regular files ------------------------------------------------------------

@pytest.fixture
def bare_model(tmp_path) -> Path:
    """A tiny model without embedded description: it reads a sidecar beside it."""
    return make_random_model(tmp_path / "bare.onnx", size=(32, 32), classes=3, resize=None, embed=False,
                             labels=("a", "b", "c"))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


CASES = ["config-fifo", "config-devzero", "config-folder", "sidecar-fifo", "sidecar-devzero", "labels-fifo",
         "labels-devzero", "model-fifo", "model-devzero", "video-fifo", "video-devzero"]


@pytest.mark.parametrize("case", CASES)
def test_non_regular_files_are_refused_without_blocking(case, tiny_model, bare_model, tmp_path):
    what, kind = case.split("-")
    special = {"fifo": lambda p: _fifo(p), "devzero": lambda p: Path("/dev/zero"),
               "folder": lambda p: (p.mkdir() or p)}[kind]
    args = ["--model", tiny_model, "--source", "synthetic://64x48"]
    if what == "config":
        args += ["--config", special(tmp_path / "config.yaml")]
    elif what == "sidecar":
        if kind == "fifo":
            _fifo(bare_model.with_suffix(".yaml"))
        else:
            bare_model.with_suffix(".yaml").symlink_to("/dev/zero")
        args[1] = bare_model
    elif what == "labels":
        labels = special(tmp_path / "labels.txt")
        bare_model.with_suffix(".yaml").write_text(f"input: {{size: [32, 32]}}\nlabels: {labels}\n")
        args[1] = bare_model
    elif what == "model":
        args[1] = special(tmp_path / "m.onnx")
    else:
        args[3] = special(tmp_path / "v.avi")
    result, _ = run_measured(*args, "--validate-config", timeout=30)
    assert result.returncode == 2, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    expected = {"fifo": "is a named pipe (FIFO), not a regular file", "devzero": "is a character device",
                "folder": "is a folder"}[kind]
    assert expected in errors[0], errors[0]


# --- text that is not UTF-8 ----------------------------------------------------------------------

@pytest.mark.parametrize("what", ["config", "sidecar", "labels"])
def test_text_that_is_not_utf8_is_one_line_exit_2(what, tiny_model, bare_model, tmp_path):
    latin1 = "# caf\xe9 au lait\n".encode("latin-1")
    args = ["--model", tiny_model, "--source", "synthetic://64x48"]
    if what == "config":
        (tmp_path / "c.yaml").write_bytes(latin1 + b"top_k: 3\n")
        args += ["--config", tmp_path / "c.yaml"]
    elif what == "sidecar":
        bare_model.with_suffix(".yaml").write_bytes(b"input: {size: [32, 32]}\n" + latin1)
        args[1] = bare_model
    else:
        (tmp_path / "labels.txt").write_bytes(b"a\nb\n" + "\xe7\n".encode("latin-1"))
        bare_model.with_suffix(".yaml").write_text("input: {size: [32, 32]}\nlabels: labels.txt\n")
        args[1] = bare_model
    result, _ = run_measured(*args, "--validate-config")
    assert result.returncode == 2, result.stderr              # labels/sidecar were exit 1 with a traceback
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "is not UTF-8 text (invalid byte on line" in errors[0], result.stderr
