"""`python -m edge_runtime collect`: save frames (or one region's crop) as JPEG training images.

The output is the layout models/distill.py reads: DIR/<label>/*.jpg, or DIR/unlabeled/ to sort later.
The source is opened exactly as the daemon opens it (the same URI, the config's capture settings), so
the pictures are what the service will see. Frames are considered every --every seconds (of the
video's own time for a video file, of the clock for a live source) and a considered frame too similar
to the last saved one is skipped and counted: a still scene gives one picture, not five hundred.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.util.argtypes import number_between, positive_int
from edge_runtime.util.errors import EXIT_OK, EXIT_UNEXPECTED, ConfigError, SourceError, UserError, first_line
from edge_runtime.util.redact import redact, sanitise_logging
from edge_runtime.util.safewrite import create_exclusive, open_folder

log = logging.getLogger("edge_runtime.teach.collect")

LABEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNLABELED = "unlabeled"
THUMB = 32                  # near-duplicate test: side of the greyscale thumbnails compared
DEFAULT_MIN_CHANGE = 2.0    # ... and their mean absolute difference (0-255 grey levels) below which a frame is skipped
JPEG_QUALITY = 95           # training data: keep the detail, JPEG artefacts are not what we want learnt
REOPEN_TRIES = 3            # a live source lost mid-run is reopened this often before giving up
SERVICE_HINT = "stop edge-runtime first (sudo systemctl stop edge-runtime)"


class CollectError(UserError):
    """A bad flag or an unusable source/output: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime collect",
        description="Save frames from a source as JPEG training images for models/distill.py: "
                    "DIR/LABEL/*.jpg (or DIR/unlabeled/*.jpg to sort by hand later).",
        epilog=f"Near-duplicates: each considered frame (or region crop) is shrunk to a {THUMB}x{THUMB} "
               "greyscale thumbnail; if its mean absolute difference from the last saved image's thumbnail "
               f"is below --min-change (default {DEFAULT_MIN_CHANGE:g} grey levels of 255) it is skipped and "
               "counted. The camera cannot be shared: while the edge-runtime service runs it holds the "
               f"camera, so {SERVICE_HINT}. Stop with Ctrl-C (what was saved stays). "
               "Exit codes: 0 done, 2 usage/config/source error, 1 unexpected.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", metavar="URI",
                     help="as for the daemon: csi://N, /dev/videoN, a video file, an image folder, rtsp://..., "
                          "synthetic://WxH (default: the config's source or camera)")
    src.add_argument("--camera", type=int, metavar="N",
                     help="camera N: the Pi camera (picamera2) on a Raspberry Pi, /dev/videoN elsewhere")
    p.add_argument("--config", metavar="FILE",
                   help="the service's YAML config: its source, capture settings and regions")
    p.add_argument("--region", metavar="NAME",
                   help="save this region's crop (at the source's resolution) instead of the whole frame: a "
                        "region configured in --config, or NAME=X,Y,W,H (fractions of the frame)")
    p.add_argument("--out", metavar="DIR", required=True, help="dataset folder; images go into DIR/LABEL/")
    lab = p.add_mutually_exclusive_group(required=True)
    lab.add_argument("--label", metavar="NAME", help="class name: 1 to 64 of A-Z a-z 0-9 _ -")
    lab.add_argument("--unlabeled", action="store_true", help=f"save into DIR/{UNLABELED}/ (distill.py ignores it)")
    p.add_argument("--every", type=number_between(0), default=1.0, metavar="SECONDS",
                   help="consider one frame per this many seconds: of the video's own time for a video file, "
                        "of the clock for a live source (default 1; 0: every frame; an image folder: every image)")
    p.add_argument("--count", type=positive_int, metavar="N",
                   help="save at most N images, then stop (default: until the source ends or Ctrl-C)")
    p.add_argument("--min-change", type=number_between(0), default=DEFAULT_MIN_CHANGE, metavar="D",
                   help="near-duplicate threshold, see below (0: keep every considered frame)")
    return p



def check_label(label: str) -> str:
    """A label becomes a folder name: refuse anything that could leave DIR or hide from distill.py."""
    if not LABEL_PATTERN.fullmatch(label):
        raise ConfigError(f"expected 1 to 64 of A-Z a-z 0-9 _ - (it becomes a folder name), got {label!r}",
                          file="command line", key="--label")
    if label == UNLABELED:
        raise ConfigError(f"'{UNLABELED}' is the folder distill.py ignores; use --unlabeled for it",
                          file="command line", key="--label")
    return label


def pick_region(cfg, text: str | None, config_file: str | None):
    """The RegionConfig that --region names (or defines inline), or None for whole frames."""
    if text is None:
        return None
    from edge_runtime.watch.regions import parse_region_flag

    if "=" in text:
        return parse_region_flag(text)
    for region in cfg.regions:
        if region.name == text:
            return region
    names = ", ".join(r.name for r in cfg.regions)
    where = f"in {config_file}" if config_file else "(no --config given)"
    raise ConfigError(f"no region {text!r} {where}; " + (f"configured regions: {names}" if names else
                      "no regions are configured; or give NAME=X,Y,W,H"), file="command line", key="--region")


def is_camera(uri: str) -> bool:
    return uri.lower().startswith(("csi:", "v4l2:", "/dev/video"))


def camera_failure(uri: str, detail: str) -> CollectError:
    if detail.startswith(f"{uri}:"):
        detail = detail[len(uri) + 1:].strip()
    return CollectError(f"camera busy or missing: {uri}: {detail}; if the edge-runtime service is running it "
                        f"holds the camera: {SERVICE_HINT}")


def thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, in grey levels (0-255)."""
    return float(np.abs(a - b).mean())


def video_fps(path: str) -> float | None:
    """The file's frame rate as OpenCV reports it, or None when it does not know it."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0 < fps < 1000 else None


class Writer:
    """JPEGs into one folder, atomically (a temp file, then a link to the final name) and never over an
    existing file. The temporary file has a random name and is created exclusively (O_EXCL|O_NOFOLLOW), and
    both names are made relative to the folder's descriptor, opened without following a link: a link
    planted at a temporary name, or a label folder that is a link, cannot redirect the write
    (util/safewrite.py)."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = folder
        self.prefix = prefix
        self.counter = 0

    def save(self, image: np.ndarray) -> Path:
        import cv2

        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise CollectError(f"OpenCV could not encode a {image.shape} frame as JPEG")
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        try:
            folder_fd = open_folder(self.folder)
        except OSError as exc:
            raise CollectError(f"cannot write into {self.folder}: {exc.strerror or exc}") from None
        tmp = None
        try:
            # hidden, and not an image suffix: never trained on, even if left behind by a crash
            fd, tmp = create_exclusive(folder_fd, ".collect-", ".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data.tobytes())
            while True:
                self.counter += 1
                name = f"{self.prefix}{stamp}_{self.counter:04d}.jpg"
                try:                           # atomic and refuses an existing name (a link too): no clobbering
                    os.link(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd, follow_symlinks=False)
                except FileExistsError:
                    continue
                except OSError:                # a file system without hard links (FAT): rename, checked first
                    if _lexists(name, folder_fd):
                        continue
                    os.rename(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
                    tmp = None
                return self.folder / name
        except OSError as exc:
            raise CollectError(f"cannot write into {self.folder}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp, dir_fd=folder_fd)
                except OSError:
                    pass
            os.close(folder_fd)


def _lexists(name: str, folder_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


@dataclass
class Tally:
    saved: int = 0
    skipped: int = 0            # near-duplicates
    unreadable: int = 0         # folder images OpenCV cannot decode
    considered: int = 0


class Progress:
    """saved / skipped / target on stderr: rewritten in place on a terminal; elsewhere (a log, a pipe)
    a line per saved image, and for skips alone at most one every SKIPS_EVERY seconds (a still scene
    with `--every 0` would otherwise write a line per frame)."""

    SKIPS_EVERY = 5.0

    def __init__(self, target: int | None, folder: Path):
        self.target = target
        self.folder = folder
        self.tty = sys.stderr.isatty()
        self._last = -math.inf
        self._saved = 0

    def line(self, t: Tally) -> str:
        target = str(self.target) if self.target else "none (until the source ends or Ctrl-C)"
        extra = f", {t.unreadable} unreadable" if t.unreadable else ""
        return (f"collect: saved {t.saved} / skipped {t.skipped} near-duplicates{extra} / target {target} "
                f"-> {self.folder}")

    def show(self, t: Tally, final: bool = False) -> None:
        if self.tty:
            sys.stderr.write("\r" + self.line(t) + "\033[K")
        else:
            now = time.monotonic()
            if not final and t.saved == self._saved and now - self._last < self.SKIPS_EVERY:
                return
            self._last, self._saved = now, t.saved
            sys.stderr.write(self.line(t) + "\n")
        sys.stderr.flush()

    def done(self, t: Tally, why: str) -> None:
        if self.tty:
            sys.stderr.write("\n")
        sys.stderr.write(f"collect: {why}: saved {t.saved}, skipped {t.skipped} near-duplicates"
                         f"{f', {t.unreadable} unreadable' if t.unreadable else ''} of {t.considered} "
                         f"frames considered, in {self.folder}\n")
        sys.stderr.flush()


class Collector:
    """Reads the source, picks frames by time, drops near-duplicates, writes the rest."""

    def __init__(self, source, *, box, writer: Writer, every: float, count: int | None, min_change: float,
                 progress: Progress, stop):
        self.source = source
        self.box = box
        self.writer = writer
        self.every = every
        self.count = count
        self.min_change = min_change
        self.progress = progress
        self.stop = stop
        self.tally = Tally()
        self.last_thumb: np.ndarray | None = None
        self.next_due: float | None = None
        # A video file's own time: frame index / frame rate (its frames decode far faster than real time).
        self.fps = None
        self.tolerance = 0.0
        if source.kind == "file":
            self.fps = video_fps(str(source.path))
            if self.fps is None:
                log.warning("%s does not say its frame rate; taking 25 frames/s for --every", source.uri)
                self.fps = 25.0
            self.tolerance = 0.5 / self.fps       # half a frame: 1/fps steps never quite add up to --every

    def frame_time(self, frame) -> float | None:
        if self.fps is not None:
            return frame.index / self.fps
        if self.source.kind == "folder":
            return None                           # images have no time between them: each is considered
        return frame.mono

    def due(self, t: float | None) -> bool:
        if t is None or self.every == 0:
            return True
        if self.next_due is None:
            self.next_due = t
        if t + self.tolerance < self.next_due:
            return False
        while self.next_due <= t + self.tolerance:  # on a fixed grid: no drift, missed slots are not made up
            self.next_due += self.every
        return True

    def offer(self, frame) -> bool:
        """Consider one frame; True once --count images are saved."""
        from edge_runtime.watch.regions import crop

        if not self.due(self.frame_time(frame)):
            return False
        image = frame.image if self.box is None else crop(frame.image, self.box)
        self.tally.considered += 1
        thumb = thumbnail(image)
        if self.last_thumb is not None and difference(thumb, self.last_thumb) < self.min_change:
            self.tally.skipped += 1
        else:
            self.writer.save(image)
            self.last_thumb = thumb
            self.tally.saved += 1
        full = self.count is not None and self.tally.saved >= self.count
        self.progress.show(self.tally, final=full)
        return full

    def run(self) -> str:
        """Until --count, the end of the source or a stop; returns why it stopped. open() first."""
        from edge_runtime.sources import SkipFrame, SourceLost

        lost = 0
        try:
            while not self.stop():
                try:
                    frame = self.source.read()
                except SkipFrame as exc:
                    log.warning("%s", exc)
                    self.tally.unreadable += 1
                    continue
                except SourceLost as exc:
                    lost += 1
                    if lost > REOPEN_TRIES:
                        raise CollectError(f"source {self.source.uri} lost ({first_line(exc)}) and not back after "
                                           f"{REOPEN_TRIES} reopens; saved {self.tally.saved}") from None
                    log.warning("%s; reopening (%d/%d)", redact(first_line(exc)), lost, REOPEN_TRIES)
                    self.source.close()
                    time.sleep(min(2.0, 0.5 * lost))
                    self.open()
                    continue
                if frame is None:
                    return "source ended"
                lost = 0
                if self.offer(frame):
                    return "done"
            return "stopped"
        finally:
            self.source.close()

    def open(self) -> None:
        from edge_runtime.sources import SourceLost

        try:
            self.source.open()
        except (SourceLost, SourceError) as exc:
            if is_camera(self.source.uri):
                raise camera_failure(self.source.uri, first_line(exc)) from None
            raise CollectError(f"cannot open source {self.source.uri}: {first_line(exc)}") from None


def make_source(cfg, uri: str):
    """The source as the daemon makes it from this config, but never looped or paced: collect reads a
    file once, as fast as it decodes, and times it by the file's own clock."""
    from edge_runtime.sources import SourceOptions, open_source

    options = SourceOptions(loop=False, realtime=False, width=cfg.capture.width, height=cfg.capture.height,
                            fps=cfg.capture.fps, timeout_s=cfg.capture.timeout)
    try:
        return open_source(uri, options)
    except SourceError as exc:
        if is_camera(uri):
            raise camera_failure(uri, first_line(exc)) from None
        raise


def output_folder(out: str, label: str) -> bool:
    """Make DIR/label; True if it was made now (so an empty one can be removed again)."""
    folder = Path(out).expanduser() / label
    if folder.is_symlink():             # it would lead out of DIR (a link planted in a shared dataset folder)
        raise CollectError(f"{folder} is a symbolic link; refusing to follow it out of {out}")
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CollectError(f"--out {out}: {folder} exists and is not a folder") from None
    except OSError as exc:
        raise CollectError(f"--out {out}: cannot make {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CollectError(f"--out {out}: {folder} is not writable")
    return not existed


def collect(args: argparse.Namespace, stop) -> int:
    from edge_runtime import config as config_mod
    from edge_runtime.core.plan import source_uri

    label = UNLABELED if args.unlabeled else check_label(args.label)
    overrides = {k: v for k, v in (("source", args.source), ("camera", args.camera)) if v is not None}
    cfg = config_mod.load(args.config, overrides, {"source": "--source", "camera": "--camera"})
    region = pick_region(cfg, args.region, args.config)
    try:
        uri = source_uri(cfg)
    except SourceError as exc:          # --camera N that is not there
        raise camera_failure(f"camera {cfg.camera}", first_line(exc)) from None
    source = make_source(cfg, uri)
    folder = Path(args.out).expanduser() / label
    prefix = f"{region.name}_" if region is not None else ""
    progress = Progress(args.count, folder)
    collector = Collector(source, box=region.box if region is not None else None, writer=Writer(folder, prefix),
                          every=args.every, count=args.count, min_change=args.min_change, progress=progress,
                          stop=stop)
    # The source first: a camera that is busy must not leave an empty class folder behind (distill.py
    # refuses a class with no images).
    collector.open()
    try:
        made = output_folder(args.out, label)
    except BaseException:
        source.close()
        raise
    what = f"region {region.name} {list(region.box)}" if region is not None else "whole frames"
    log.info("collecting %s from %s into %s, one frame per %gs%s", what, redact(uri), folder, args.every,
             " (video time)" if source.kind == "file" else "")
    try:
        why = collector.run()
    except KeyboardInterrupt:
        why = "interrupted"
    finally:
        if made and collector.tally.saved == 0:
            try:
                folder.rmdir()              # nothing saved: no empty class folder
            except OSError:
                pass
    progress.done(collector.tally, why)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    import threading

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr,
                        force=True)
    sanitise_logging()      # no password, no forged line in any message
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        return collect(args, stopping.is_set)
    except UserError as exc:
        log.error("%s", redact(str(exc)))          # a stream's URI may hold a password
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception:
        log.exception("unexpected error (please report it with this traceback)")
        return EXIT_UNEXPECTED
