"""Snapshots: a JPEG of the full frame, region box drawn, for each state change; written off the loop.

`SnapshotWriter.submit()` is called from the inference loop: it copies the frame, picks the file
name and returns it at once; a thread of its own draws, encodes (cv2.imencode) and writes the file
atomically (a temporary file in the same folder, then os.replace), then applies retention (the
oldest of its own files beyond `max_files` or `max_mb` go). Nothing here raises into the caller:
a full or read-only disk is one warning a minute and a `snapshots_failed` count, and a queue that
is full (the disk is slower than the events) drops the snapshot and counts it.

File names are built only from a UTC time, a region name (already [a-z0-9_-]) and a slug of the
label ([a-z0-9-]), and `resolve()` accepts only names of that pattern, so no config value, label or
request can reach outside `dir`.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.util.schema import between, field

log = logging.getLogger(__name__)

# <UTC yyyymmddThhmmss.mmmZ>_<region>_<label slug>.jpg: fixed width, so that names sort in time order
# (`ls` shows them oldest first). Two in the same millisecond: the later one is nudged a millisecond on.
# Names of earlier versions (whole seconds, `-<n>` for a second one in that second) are still ours.
NAME_PATTERN = re.compile(r"(\d{8}T\d{6}(?:\.\d{3})?Z)(?:-(\d{1,4}))?_([a-z0-9_-]{1,32})_([a-z0-9-]{1,40})\.jpg")
_TEMP_PREFIX = ".snapshot-"
_TEMP_PATTERN = re.compile(re.escape(_TEMP_PREFIX) + r"[A-Za-z0-9_]+\.part")
WARN_EVERY_S = 60.0
# Snapshot files: the owner (the daemon's user) writes, its group reads (e.g. a web server or a person in
# the service's group), others nothing: a frame of the camera is not for every account on the board.
FILE_MODE = 0o640
MAX_READ_BYTES = 32 * 1024 * 1024    # resolve()/read(): no file of ours is bigger than a frame's JPEG


@dataclass(frozen=True)
class SnapshotConfig:
    dir: str | None = field(None, help="folder for event snapshots; unset: no snapshots")
    max_files: int = field(1000, check=between(1, 1_000_000), help="keep at most this many")
    max_mb: float = field(200.0, check=between(0.1, 1_000_000), help="... and this many MB")


def label_slug(label: str | None) -> str:
    """A label as a safe file-name part: lower-case a-z 0-9, runs of anything else as one '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(label or "").lower()).strip("-")[:40].strip("-")
    return slug or "none"


def file_name(when: float, region: str, label: str | None) -> str:
    return name_at(round(when * 1000), region, label)


def name_at(ms: int, region: str, label: str | None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ms // 1000))
    return f"{stamp}.{ms % 1000:03d}Z_{region}_{label_slug(label)}.jpg"


def _sort_key(name: str, mtime_ns: int = 0):
    """Oldest first: by the name's UTC second, then (several events in one second) by when it was written."""
    m = NAME_PATTERN.fullmatch(name)
    return (m.group(1), mtime_ns, int(m.group(2) or 0), name) if m else ("", mtime_ns, 0, name)


@dataclass
class _Job:
    image: np.ndarray
    name: str
    box: tuple[float, ...] | None
    label: str | None


class SnapshotWriter:
    """Writes event snapshots into one folder. Construction does no I/O; start() and close() do."""

    def __init__(self, directory: str | os.PathLike, max_files: int = 1000, max_mb: float = 200.0, *,
                 stats=None, jpeg_quality: int = 85, queue_size: int = 8, fsync: bool = False):
        self.dir = Path(directory)
        self.max_files = max_files
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.jpeg_quality = jpeg_quality
        self.fsync = fsync
        self._stats = stats
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._known: set[str] = set()       # names on disk or queued: submit() keeps new ones unique
        self._last_ms = 0                   # the newest name's time: the next one is later
        self._thread: threading.Thread | None = None
        self._root: Path | None = None
        self._warnings = RateLimited(WARN_EVERY_S)     # from the writer thread and from start()
        self.written = 0
        self.failed = 0
        self.dropped = 0
        # The last write failed (a full disk, a folder gone): the next snapshots are still tried, but their
        # names are not given to the events until one is written again: no event names a file that a
        # full disk will not hold (issue 28.5).
        self._failing = False

    @classmethod
    def from_config(cls, cfg: SnapshotConfig, stats=None, **kwargs) -> SnapshotWriter | None:
        """None when snapshots are off (no `dir`)."""
        if not cfg.dir:
            return None
        return cls(cfg.dir, cfg.max_files, cfg.max_mb, stats=stats, **kwargs)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create the folder if need be, learn the files already there, start the writer thread.

        A folder that cannot be created or read is a warning, not an error: classification goes on
        and every snapshot then counts as failed.
        """
        if self._thread is not None:
            return
        self._count(None)        # the counters appear (at 0) in stats and metrics once snapshots are on
        try:
            if not self.dir.exists():
                # A typo in snapshots.dir must be visible: the folder is made, and said so once.
                log.warning("snapshot folder %s does not exist; creating it (check snapshots.dir if that is "
                            "not the folder you meant)", self.dir.absolute())
            self.dir.mkdir(parents=True, exist_ok=True)
            self._root = self.dir.resolve(strict=True)
            names = self._own_files()
            with self._lock:
                self._known.update(name for name, _ in names)
            for entry in os.scandir(self._root):     # a crash mid-write left a temporary file: remove it
                if _TEMP_PATTERN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
        except OSError as exc:
            self._failing = True
            self._root = self._root or self.dir.absolute()
            self._warn(f"snapshot folder {self.dir} is not usable ({exc.strerror or exc}); "
                       f"snapshots will fail until it is")
        self._thread = threading.Thread(target=self._run, name="snapshots", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        thread.join(timeout=timeout)

    # --- the caller's side -------------------------------------------------------------------

    def submit(self, image_bgr: np.ndarray, region_name: str, box: Sequence[float] | None,
               label: str | None, when: float) -> str | None:
        """Queue a snapshot; its file name at once, or None (not started, or queue full: counted)."""
        if self._thread is None:
            return None
        with self._lock:
            # Each name later than the one before (names sort in the order the events came), and never
            # one already there (a restarted writer learns them in start()).
            ms = max(round(when * 1000), self._last_ms + 1)
            name = name_at(ms, region_name, label)
            while name in self._known:
                ms += 1
                name = name_at(ms, region_name, label)
            self._last_ms = ms
            if not NAME_PATTERN.fullmatch(name):      # a region name that never passed the config check
                return None
            self._known.add(name)
        job = _Job(np.array(image_bgr, copy=True), name, tuple(box) if box is not None else None, label)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._known.discard(name)
            self._count("dropped")
            return None
        return None if self._failing else name

    def resolve(self, name: str) -> Path | None:
        """The path of snapshot `name` for serving it, or None: only our own names, regular files in dir."""
        if self._root is None or not isinstance(name, str) or len(name) > 128:
            return None
        if "/" in name or "\\" in name or "\0" in name or ".." in name or not NAME_PATTERN.fullmatch(name):
            return None
        path = self._root / name
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):        # a symlink (wherever it points) or anything odd
            return None
        return path

    def read(self, name: str) -> bytes | None:
        """The bytes of snapshot `name` (see resolve), opened without following a symlink."""
        path = self.resolve(name)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_READ_BYTES:
                return None
            return f.read(MAX_READ_BYTES)

    # --- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
            except Exception as exc:        # never let one bad frame stop the thread  # noqa: BLE001
                with self._lock:
                    self._known.discard(job.name)
                self._failing = True
                self._count("failed")
                self._warn(f"snapshot {job.name} not written: {getattr(exc, 'strerror', None) or exc}")
                continue
            self._failing = False
            self._count("written")
            try:
                self._retain(keep=job.name)
            except OSError as exc:
                self._warn(f"snapshot retention in {self._root}: {exc.strerror or exc}")

    def _write(self, job: _Job) -> None:
        import cv2

        from edge_runtime.engines.preprocess import as_bgr
        from edge_runtime.watch.regions import crop_pixels

        image = as_bgr(job.image)        # our own copy (submit), so drawing on it is fine
        height, width = image.shape[:2]
        if job.box is not None:
            x0, y0, x1, y1 = crop_pixels(job.box, width, height)
            thick = max(2, round(min(width, height) / 200))
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 255), thick)
            text = "".join(c for c in str(job.label or "") if 32 <= ord(c) < 127)[:60]   # Hershey: ASCII only
            if text:
                scale = max(0.5, min(width, height) / 600)
                (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
                ty = y0 - thick - base if y0 - thick - base - th >= 0 else min(y1 + th + thick, height - base)
                cv2.rectangle(image, (x0, ty - th - base), (x0 + tw, ty + base), (0, 0, 255), cv2.FILLED)
                cv2.putText(image, text, (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                            cv2.LINE_AA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        root = self._root
        fd, tmp = _mkstemp(root)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)      # mkstemp makes 0600: the page's group reads them too
                f.write(data.tobytes())
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, root / job.name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _own_files(self) -> list[tuple[str, int]]:
        """(name, size) of our own snapshot files in dir, oldest first."""
        found = []
        for entry in os.scandir(self._root):
            if NAME_PATTERN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append((_sort_key(entry.name, st.st_mtime_ns), entry.name, st.st_size))
        found.sort()
        return [(name, size) for _, name, size in found]

    def _retain(self, keep: str) -> None:
        files = self._own_files()
        total = sum(size for _, size in files)
        count = len(files)
        for name, size in files:
            if count <= self.max_files and total <= self.max_bytes:
                break
            if name == keep:         # the newest event's picture stays, even alone over max_mb
                continue
            try:
                os.unlink(self._root / name)
            except FileNotFoundError:
                pass
            with self._lock:
                self._known.discard(name)
            count -= 1
            total -= size

    # --- counting and warning ----------------------------------------------------------------

    def _count(self, what: str | None) -> None:
        """Add one to `what` (None: nothing) and show the counts in the stats line and metrics."""
        with self._lock:
            if what is not None:
                setattr(self, what, getattr(self, what) + 1)
            counts = {"snapshots_written": self.written, "snapshots_failed": self.failed,
                      "snapshots_dropped": self.dropped}
        stats = self._stats
        if stats is not None:
            for key, value in counts.items():
                stats.set_extra(key, value)

    def _warn(self, message: str) -> None:
        self._warnings.warn(log, "%s (further snapshot failures this minute are counted, not logged)", message)


def _mkstemp(root: Path) -> tuple[int, str]:
    import tempfile

    # O_EXCL creation in dir itself (same file system, so os.replace is atomic); never follows a link.
    return tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=root)
