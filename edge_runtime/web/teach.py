"""The Teach page: label pictures per region in the browser, press Train, the region answers with its new labels.

With http.collect_dir set, HttpSink hands GET/POST requests under /teach and /train to Teach.route():

  GET  /teach                      the page (web/static/teach.html, teach.js, teach.css: no CDN, works
                                   offline, under the live page's strict Content-Security-Policy)
  GET  /teach/api/overview?region=R    labels with this region's picture counts, candidates, bounds, the
                                   taught model in use, the training state
  GET  /teach/api/pictures?region=R&label=L&page=N   one page of a label's pictures (newest first)
  GET  /teach/api/candidates?region=R  the unlabeled candidates (ids, frame numbers, ages)
  GET  /teach/thumb?region=R&label=L&name=F, /teach/candidate?region=R&id=N   thumbnails (JPEG)
  POST /teach/api/assign?region=R&to=L&id=..   candidates -> label L (saved as `collect` saves them)
  POST /teach/api/discard?region=R&id=..        candidates dropped
  POST /teach/api/move?region=R&from=L&to=M&name=..   pictures moved (renamed, nothing copied)
  POST /teach/api/delete?region=R&from=L&name=..      pictures deleted
  POST /teach/api/labels?add=L                  a new (empty) label folder
  POST /train?region=R             202 and a training in a background thread; 409 while one runs
  GET  /train                      {state: idle|running|done|failed, region, progress, images, labels,
                                   accuracy, per_class, confusion, error, ...}
  POST /train/rollback?region=R    back to the previous taught model (or the config's)

Every POST follows /collect's same-origin rule. A region's pictures are the files of collect_dir/<label>/
whose names start with `<region>_` and a time stamp (as POST /collect and `collect --region` name them);
without regions, all of them. The whole frame is taught only when no regions are configured.

Unlabeled candidates are kept in memory, not in collect_dir/unlabeled/: a sampler thread looks at the
latest frame every CANDIDATE_EVERY_S, and a region crop that differs from every kept candidate by at least
CANDIDATE_MIN_CHANGE grey levels (collect's 32x32 thumbnail test) is kept as a JPEG, MAX_CANDIDATES a
region (and at most MAX_CANDIDATE_BYTES of JPEG), oldest dropped first. Why memory: a camera on a wall
changes all day, and writing every distinct scene to an SD card nobody looks at would wear it and fill
collect_dir; a candidate becomes a file only when the user labels it. The cost: at most 8 MB a region
(48 640x480 crops at ~60 KB: ~3 MB), and candidates do not survive a restart (they are only candidates).

Training (teach/train.py's train()) runs in one thread at low priority (os.nice, one onnxruntime thread,
the head fit on one BLAS thread with threadpoolctl) on hard links of the region's pictures in a hidden
folder of collect_dir (the dataset is never moved or changed by a training, and pictures moved or
deleted meanwhile do not break it). The model is written into the state folder (teach/taught.py),
recorded as the region's model in use and deployed by the daemon's own reload (SinkContext.reload: new
sessions warmed beside the running ones, swapped between two frames, camera open). Any failure, the
reload's refusal included, leaves the running model and the state as they were: state `failed` with the reason.

Why one file of ~680 lines for now: one page's routes, candidates and training job share one state (the
region's pictures and the job); when web/ gets its route table (docs/ARCHITECTURE.md), the routes move to
plain functions and the job to teach/.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from edge_runtime.teach import collect, taught
from edge_runtime.web.assets import HEADERS as PAGE_HEADERS   # the live page's strict CSP, one copy
from edge_runtime.util import safeio
from edge_runtime.util.jsonline import dumps

log = logging.getLogger("edge_runtime.teach")

STATIC = Path(__file__).resolve().parent / "static"
FILES = {"/teach": ("teach.html", "text/html; charset=utf-8"),
         "/teach/teach.js": ("teach.js", "text/javascript; charset=utf-8"),
         "/teach/teach.css": ("teach.css", "text/css; charset=utf-8")}

MAX_CANDIDATES = 48          # per region, in memory, oldest dropped first
MAX_CANDIDATE_BYTES = 8 << 20   # ... and at most this many JPEG bytes a region (48 full-HD crops would be ~20 MB)
CANDIDATE_EVERY_S = 1.0      # the sampler looks at the latest frame this often
CANDIDATE_MIN_CHANGE = 6.0   # grey levels (of 255) from every kept candidate: a distinct scene
MAX_PER_LABEL = 500          # pictures of one label for one region: the page refuses more, training too
MAX_LABELS = 20              # labels a region is taught at once
MAX_TRAIN_S = 300.0          # a training still computing features after this stops, failed
MAX_SELECT = 200             # pictures or candidates one request acts on
PER_PAGE = 48                # gallery page
THUMB_SIDE = 160
THUMB_CACHE = 512            # thumbnails kept encoded (about 6 KB each)
NICE = 10                    # the training thread's niceness: inference first
POST_PATHS = ("/train", "/train/rollback", "/teach/api/labels", "/teach/api/assign", "/teach/api/discard",
              "/teach/api/move", "/teach/api/delete")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.(jpg|jpeg|png)", re.IGNORECASE)


def _json(status: int, obj) -> tuple[int, bytes, str]:
    return status, (dumps(obj) + "\n").encode(), "application/json"


class Refused(Exception):
    """A request the page made wrong, or cannot be served now: (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Candidate:
    id: int
    frame: int | None
    at: float
    thumb: np.ndarray        # collect's 32x32 grey thumbnail: the distinctness test
    jpeg: bytes              # the crop at the source's resolution (what a label saves)
    small: bytes             # the page's thumbnail


class Training:
    """GET /train's state; one training at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state = {"state": "idle", "region": None, "progress": 0.0, "images": None, "labels": None,
                      "accuracy": None, "per_class": None, "confusion": None, "error": None}

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.state)

    def update(self, **changes) -> None:
        with self.lock:
            self.state.update(changes)


class Teach:
    def __init__(self, sink, same_origin):
        """`sink`: the HttpSink (its config, context, latest frame); `same_origin(headers)`: /collect's rule
        for every POST (passed in: web/http.py imports this module, not the other way round). Starts the
        candidate sampler."""
        self.sink = sink
        self.same_origin = same_origin
        self.root = Path(sink.cfg.collect_dir).expanduser()
        self.state_dir = Path(sink.cfg.state_dir).expanduser() if sink.cfg.state_dir else self.root / taught.DEFAULT_DIR
        self.store = taught.Store(self.state_dir)
        self.training = Training()
        self._train_thread: threading.Thread | None = None
        self._files_lock = threading.Lock()        # moves, deletes, saves: one at a time
        self._candidates: dict[str, deque[Candidate]] = {}
        self._cand_lock = threading.Lock()
        self._next_id = 0
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()
        self._pages: dict[str, bytes] = {}
        self._clean_leftovers()
        self._sampler = threading.Thread(target=self._sample_loop, name="teach-candidates", daemon=True)
        self._sampler.start()

    def _clean_leftovers(self) -> None:
        """A daemon stopped mid-training leaves its folder of hard links (never the pictures themselves) and
        perhaps train()'s hidden temp file: both are removed at the next start."""
        for stale in self.root.glob(".train-*") if self.root.is_dir() else ():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        for stale in self.state_dir.glob(".*.tmp") if self.state_dir.is_dir() else ():
            stale.unlink(missing_ok=True)

    # -- regions and pictures --

    def regions(self) -> tuple:
        return tuple(getattr(self.sink.context, "regions", ()) or ())

    def key_for(self, params: dict) -> str:
        """The region named by ?region= ("" = the whole frame, only without regions)."""
        name = params.get("region", [""])[0]
        names = [r.name for r in self.regions()]
        if not names:
            if name:
                raise Refused(400, f"no region {name!r}: no regions are configured (teach the whole frame)")
            return taught.FRAME
        if name not in names:
            raise Refused(400, f"no region {name!r}; configured regions: {', '.join(names)}")
        return name

    def belongs(self, key: str):
        if key == taught.FRAME:
            return lambda name: True
        pattern = re.compile(re.escape(key) + r"_\d{8}-\d{6}")
        return lambda name: bool(pattern.match(name))

    def label_dirs(self) -> list[str]:
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        return [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
                and collect.LABEL_PATTERN.fullmatch(e.name)]

    def pictures(self, key: str, label: str) -> list[str]:
        """The region's picture names in collect_dir/label, newest first (names start with the time)."""
        mine = self.belongs(key)
        try:
            with os.scandir(self.root / label) as it:
                names = [e.name for e in it if NAME_PATTERN.fullmatch(e.name) and mine(e.name)
                         and e.is_file(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(names, key=lambda n: n.split("_", 1)[-1] if key else n, reverse=True)

    def check_label(self, label: str, *, unlabeled_ok: bool = True) -> str:
        if unlabeled_ok and label == collect.UNLABELED:
            return label
        try:
            return collect.check_label(label)
        except Exception as exc:
            raise Refused(400, f"label: {getattr(exc, 'detail', exc)}") from None

    # -- candidates --

    def _sample_loop(self) -> None:
        while not self.sink.closed_event.wait(CANDIDATE_EVERY_S):
            try:
                self.sample()
            except Exception:          # this thread must not die with one odd frame
                log.debug("teach: candidate sampling failed", exc_info=True)

    def sample(self) -> None:
        import cv2

        from edge_runtime.watch.regions import crop

        latest = self.sink._latest
        if latest is None or latest[2] is None:
            return
        _, record, image = latest
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        targets = [(r.name, r.box) for r in self.regions()] or [(taught.FRAME, None)]
        for key, box in targets:
            part = image if box is None else crop(image, box)
            thumb = collect.thumbnail(part)
            with self._cand_lock:
                kept = self._candidates.setdefault(key, deque(maxlen=MAX_CANDIDATES))
                if any(collect.difference(thumb, c.thumb) < CANDIDATE_MIN_CHANGE for c in kept):
                    continue
            ok, full = cv2.imencode(".jpg", np.ascontiguousarray(part),
                                    [cv2.IMWRITE_JPEG_QUALITY, collect.JPEG_QUALITY])
            if not ok:
                continue
            small = self._encode_thumb(part)
            with self._cand_lock:
                if any(collect.difference(thumb, c.thumb) < CANDIDATE_MIN_CHANGE for c in kept):
                    continue            # another caller kept this scene meanwhile
                self._next_id += 1
                kept.append(Candidate(self._next_id, record.get("frame"), time.time(), thumb, full.tobytes(), small))
                while len(kept) > 1 and sum(len(c.jpeg) + len(c.small) for c in kept) > MAX_CANDIDATE_BYTES:
                    kept.popleft()

    def candidates(self, key: str) -> list[Candidate]:
        with self._cand_lock:
            return list(self._candidates.get(key, ()))

    def take_candidates(self, key: str, ids: set[int]) -> list[Candidate]:
        with self._cand_lock:
            kept = self._candidates.get(key, deque())
            taken = [c for c in kept if c.id in ids]
            for c in taken:
                kept.remove(c)
            return taken

    # -- thumbnails --

    def _encode_thumb(self, image: np.ndarray) -> bytes:
        import cv2

        h, w = image.shape[:2]
        scale = THUMB_SIDE / max(h, w)
        if scale < 1:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else b""

    def thumb(self, path: Path) -> bytes | None:
        import cv2

        try:
            st = path.lstat()
        except OSError:
            return None
        if not os.path.isfile(path) or path.is_symlink():      # the gallery lists plain files only
            return None
        cache_key = (str(path), st.st_mtime_ns, st.st_size)
        with self._thumbs_lock:
            if cache_key in self._thumbs:
                self._thumbs.move_to_end(cache_key)
                return self._thumbs[cache_key]
        try:
            data = safeio.read_bytes(path, limit=32 << 20)
        except (OSError, ValueError):
            return None
        flag = cv2.IMREAD_REDUCED_COLOR_2 if len(data) > 200_000 else cv2.IMREAD_COLOR
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        if image is None:
            return None
        small = self._encode_thumb(image)
        with self._thumbs_lock:
            self._thumbs[cache_key] = small
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return small

    # -- routing --

    def route(self, method: str, path: str, query: str, headers) -> tuple | None:
        """(status, body, content type[, headers]) for /teach... and /train...; None for other paths."""
        if not (path == "/teach" or path.startswith("/teach/") or path == "/train" or path.startswith("/train/")):
            return None
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=MAX_SELECT + 8,
                              strict_parsing=bool(query))
        except ValueError:
            return _json(400, {"error": f"bad query (at most {MAX_SELECT} pictures at once)"})
        try:
            if method == "POST":
                if not self.same_origin(headers):
                    return _json(403, {"error": "cross-site request refused: its Origin (or Referer) is not this page"})
                return self._post(path, params)
            return self._get(path, params)
        except Refused as exc:
            return _json(exc.status, {"error": str(exc)})

    def _one(self, params: dict, name: str, default: str | None = None) -> str:
        values = params.get(name)
        if not values:
            if default is None:
                raise Refused(400, f"expected ?{name}=...")
            return default
        if len(values) > 1:
            raise Refused(400, f"?{name}= given more than once")
        return values[0]

    def _get(self, path: str, params: dict):
        if path in FILES:
            name, ctype = FILES[path]
            if name not in self._pages:
                try:
                    self._pages[name] = (STATIC / name).read_bytes()
                except OSError as exc:
                    log.error("http: the Teach page's file %s cannot be read: %s", STATIC / name, exc.strerror or exc)
                    raise Refused(500, f"the page's file {name} is missing from the installation") from None
            return 200, self._pages[name], ctype, PAGE_HEADERS
        if path == "/train":
            return _json(200, self.training.snapshot())
        if path == "/teach/api/overview":
            return _json(200, self.overview(self.key_for(params)))
        if path == "/teach/api/pictures":
            key = self.key_for(params)
            label = self.check_label(self._one(params, "label"))
            try:
                page = max(0, int(self._one(params, "page", "0")))
            except ValueError:
                raise Refused(400, "page: expected a number") from None
            names = self.pictures(key, label)
            pages = max(1, -(-len(names) // PER_PAGE))
            page = min(page, pages - 1)
            return _json(200, {"label": label, "total": len(names), "page": page, "pages": pages,
                               "per_page": PER_PAGE, "names": names[page * PER_PAGE:(page + 1) * PER_PAGE]})
        if path == "/teach/api/candidates":
            key = self.key_for(params)
            now = time.time()
            items = [{"id": c.id, "frame": c.frame, "age_s": round(now - c.at, 1)} for c in self.candidates(key)]
            items.reverse()         # newest first
            return _json(200, {"region": key or None, "items": items, "max": MAX_CANDIDATES})
        if path == "/teach/thumb":
            key = self.key_for(params)
            label = self.check_label(self._one(params, "label"))
            name = self._one(params, "name")
            if not NAME_PATTERN.fullmatch(name) or not self.belongs(key)(name):
                raise Refused(404, "no such picture")
            data = self.thumb(self.root / label / name)
            if data is None:
                raise Refused(404, "no such picture (or not one OpenCV reads)")
            return 200, data, "image/jpeg"
        if path == "/teach/candidate":
            key = self.key_for(params)
            try:
                ident = int(self._one(params, "id"))
            except ValueError:
                raise Refused(400, "id: expected a number") from None
            found = next((c for c in self.candidates(key) if c.id == ident), None)
            if found is None:
                raise Refused(404, "no such candidate (labelled, discarded or dropped as the oldest)")
            return 200, (found.jpeg if self._one(params, "full", "0") == "1" else found.small), "image/jpeg"
        raise Refused(404, "not found")

    def _post(self, path: str, params: dict):
        if path not in POST_PATHS:
            raise Refused(404, "not found")
        if path == "/train":
            return self.start_training(self.key_for(params))
        if path == "/train/rollback":
            return self.rollback(self.key_for(params))
        if path == "/teach/api/labels":
            label = self.check_label(self._one(params, "add"), unlabeled_ok=False)
            if label not in self.label_dirs() and len(self.label_dirs()) >= MAX_LABELS * 5:
                raise Refused(409, f"{len(self.label_dirs())} label folders already; delete some first")
            try:
                collect.output_folder(str(self.root), label)
            except collect.CollectError as exc:
                raise Refused(500, str(exc)) from None
            return _json(200, {"added": label})
        key = self.key_for(params)
        if path in ("/teach/api/assign", "/teach/api/discard"):
            try:
                ids = {int(v) for v in params.get("id", [])}
            except ValueError:
                raise Refused(400, "id: expected numbers") from None
            if not ids:
                raise Refused(400, "expected ?id=N (one or more)")
            if path.endswith("discard"):
                return _json(200, {"discarded": len(self.take_candidates(key, ids))})
            label = self.check_label(self._one(params, "to"))
            return self.assign(key, label, ids)
        if path in ("/teach/api/move", "/teach/api/delete"):
            source = self.check_label(self._one(params, "from"))
            names = params.get("name", [])
            if not names:
                raise Refused(400, "expected ?name=FILE (one or more)")
            mine = self.belongs(key)
            bad = [n for n in names if not NAME_PATTERN.fullmatch(n) or not mine(n)]
            if bad:
                raise Refused(400, f"not a picture of {taught.describe(key)}: {bad[0]!r}")
            if path.endswith("delete"):
                return self.delete(source, names)
            return self.move(key, source, self.check_label(self._one(params, "to")), names)
        raise Refused(404, "not found")

    # -- labelling --

    def _room(self, key: str, label: str, adding: int) -> None:
        if label == collect.UNLABELED:
            return
        have = len(self.pictures(key, label))
        if have + adding > MAX_PER_LABEL:
            raise Refused(409, f"label {label} would have {have + adding} pictures of {taught.describe(key)}; "
                               f"at most {MAX_PER_LABEL}: delete some first")

    def assign(self, key: str, label: str, ids: set[int]):
        import cv2

        with self._files_lock:
            self._room(key, label, len(ids))
            taken = self.take_candidates(key, ids)
            try:
                collect.output_folder(str(self.root), label)
                writer = collect.Writer(self.root / label, f"{key}_" if key else "")
                saved = []
                for c in taken:
                    image = cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR)
                    saved.append(writer.save(image).name)
            except collect.CollectError as exc:
                raise Refused(500, str(exc)) from None
        log.info("teach: %d candidate(s) of %s labelled %s", len(saved), taught.describe(key), label)
        return _json(200, {"label": label, "saved": saved, "missing": len(ids) - len(taken),
                           "images": len(self.pictures(key, label))})

    def move(self, key: str, source: str, target: str, names: list[str]):
        if source == target:
            raise Refused(400, "from and to are the same label")
        moved = missing = 0
        with self._files_lock:
            self._room(key, target, len(names))
            try:
                collect.output_folder(str(self.root), target)
            except collect.CollectError as exc:
                raise Refused(500, str(exc)) from None
            for name in names:
                src, dst = self.root / source / name, self.root / target / name
                if not src.is_file() or src.is_symlink():
                    missing += 1
                    continue
                n = 0
                while dst.exists():      # never over another picture
                    n += 1
                    dst = dst.with_name(f"{Path(name).stem}-{n}{Path(name).suffix}")
                try:
                    os.rename(src, dst)
                    moved += 1
                except OSError as exc:
                    raise Refused(500, f"cannot move {name}: {exc.strerror or exc}") from None
        return _json(200, {"moved": moved, "missing": missing, "to": target})

    def delete(self, source: str, names: list[str]):
        deleted = 0
        with self._files_lock:
            for name in names:
                path = self.root / source / name
                try:
                    if path.is_file() and not path.is_symlink():
                        path.unlink()
                        deleted += 1
                except OSError as exc:
                    raise Refused(500, f"cannot delete {name}: {exc.strerror or exc}") from None
        return _json(200, {"deleted": deleted})

    def overview(self, key: str) -> dict:
        labels = [{"name": label, "count": len(self.pictures(key, label))}
                  for label in self.label_dirs() if label != collect.UNLABELED]
        from edge_runtime.teach.train import MIN_PER_LABEL, RECOMMENDED_PER_LABEL

        history = self.store.history(key)
        return {"region": key or None, "regions": [r.name for r in self.regions()], "labels": labels,
                "unlabeled": len(self.pictures(key, collect.UNLABELED)), "candidates": len(self.candidates(key)),
                "minimum": MIN_PER_LABEL, "recommended": RECOMMENDED_PER_LABEL,
                "bounds": {"per_label": MAX_PER_LABEL, "labels": MAX_LABELS, "candidates": MAX_CANDIDATES,
                           "train_s": MAX_TRAIN_S},
                "taught": {k: history[-1].get(k) for k in ("file", "labels", "accuracy", "images", "method", "date")}
                if history else None, "can_roll_back": bool(history), "train": self.training.snapshot()}

    # -- training --

    def backbone(self, key: str) -> str:
        """The model the region runs in the config (a taught model's own backbone, not the taught model)."""
        current = self.store.current(key)
        if current and current.get("backbone"):
            return current["backbone"]
        region = next((r for r in self.regions() if r.name == key), None)
        if region is not None and region.model:
            return region.model
        return self.sink.metrics.model_info["path"]

    def start_training(self, key: str):
        with self.training.lock:
            if self.training.state["state"] == "running":
                return _json(409, {"error": f"a training of {taught.describe(self.training.state['region'] or '')} "
                                            "is running; wait for it", "train": dict(self.training.state)})
            self.training.state.update(state="running", region=key or None, progress=0.0, images=None, labels=None,
                                       accuracy=None, per_class=None, confusion=None, error=None, method=None,
                                       model=None, started=datetime.datetime.now(datetime.timezone.utc)
                                       .isoformat(timespec="seconds"), seconds=None)
            self._train_thread = threading.Thread(target=self._train, args=(key,), name="teach-train", daemon=True)
            self._train_thread.start()
            state = dict(self.training.state)
        return _json(202, state)

    def _train(self, key: str) -> None:
        try:
            os.nice(NICE)               # Linux: this thread only (onnxruntime runs on it: threads=1)
        except OSError as exc:          # the service's seccomp filter refuses setpriority: one thread still
            log.debug("teach: cannot lower the training's priority: %s", exc)
        started = time.monotonic()
        work = self.root / f".train-{os.getpid()}"
        try:
            model, report = self._train_and_deploy(key, work, started)
        except Exception as exc:
            from edge_runtime.util.errors import UserError, first_line

            why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"
            if isinstance(exc, MemoryError):
                why = "out of memory"
            why = why.replace(str(work), str(self.root))     # name the user's picture, not its hard link
            log.error("teach: training %s failed, the running model is unchanged: %s", taught.describe(key), why)
            outcome = {"state": "failed", "error": why, "seconds": round(time.monotonic() - started, 2)}
        else:
            log.info("teach: %s now runs %s: %s, held-out accuracy %.1f%% on %d images (%s head) in %.1f s",
                     taught.describe(key), model.name, ", ".join(report.labels), 100 * report.accuracy,
                     sum(report.images.values()), report.method, time.monotonic() - started)
            outcome = {"state": "done", "progress": 1.0, "seconds": round(time.monotonic() - started, 2)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        # Only now, with the hard links gone: whoever sees `done`/`failed` finds the dataset folder as it was.
        self.training.update(**outcome)

    def _train_and_deploy(self, key: str, work: Path, started: float):
        from edge_runtime.teach import train as teach_train

        # The region's pictures as hard links (a copy where the file system has none) in a hidden folder:
        # train() reads a stable set, and the dataset itself is never touched.
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        images = {}
        for label in self.label_dirs():
            if label == collect.UNLABELED:
                continue
            names = self.pictures(key, label)
            if not names:
                continue
            if len(names) > MAX_PER_LABEL:
                raise teach_train.TrainError(f"label {label} has {len(names)} pictures of {taught.describe(key)}, "
                                             f"at most {MAX_PER_LABEL}: delete some")
            (work / label).mkdir()
            for name in names:
                try:
                    os.link(self.root / label / name, work / label / name)
                except FileNotFoundError:
                    continue        # moved or deleted since it was listed
                except OSError:
                    shutil.copy2(self.root / label / name, work / label / name)
            images[label] = len(names)
        few = [f"{label} ({n})" for label, n in images.items() if n < teach_train.MIN_PER_LABEL]
        if len(images) < 2 or few:
            raise teach_train.TrainError(
                f"{taught.describe(key)} has pictures of {len(images)} label(s)"
                + (f" ({', '.join(f'{k} ({n})' for k, n in images.items())})" if images else "")
                + f"; training needs at least 2 labels with at least {teach_train.MIN_PER_LABEL} pictures each "
                f"({teach_train.RECOMMENDED_PER_LABEL}+ recommended)")
        if len(images) > MAX_LABELS:
            raise teach_train.TrainError(f"{len(images)} labels have pictures of {taught.describe(key)}; at most "
                                         f"{MAX_LABELS} at once")
        self.training.update(images=sum(images.values()), labels=list(images))
        backbone = self.backbone(key)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        prefix = key.lower() if key else "frame"
        out = self.state_dir / f"{prefix}-{stamp}.onnx"
        n = 0
        while out.exists():
            n += 1
            out = self.state_dir / f"{prefix}-{stamp}-{n}.onnx"

        def progress(done: int, total: int) -> None:
            self.training.update(progress=round(0.9 * done / total, 3))

        report = teach_train.train(work, backbone, out, progress=progress, deadline=started + MAX_TRAIN_S,
                                   cancelled=lambda: self.sink.closed, threads=1)
        self.training.update(progress=0.95, images=sum(report.images.values()), labels=list(report.labels),
                             accuracy=report.accuracy, per_class=report.per_class, confusion=report.confusion,
                             method=report.method, model=out.name)
        entry = {"file": out.name, "backbone": backbone, "labels": list(report.labels), "accuracy": report.accuracy,
                 "images": sum(report.images.values()), "method": report.method, "date": report.date}
        try:
            dropped = self.store.push(key, entry)
        except (OSError, ValueError) as exc:
            out.unlink(missing_ok=True)
            raise teach_train.TrainError(f"cannot record the taught model in {self.store.path}: "
                                         f"{getattr(exc, 'strerror', None) or exc}") from None
        why = self.deploy()
        if why is not None:
            self._undo_push(key, out.name)
            out.unlink(missing_ok=True)
            raise teach_train.TrainError(f"the daemon refused the taught model: {why}")
        self.store.forget(dropped)
        return out, report

    def _undo_push(self, key: str, file: str) -> None:
        current = self.store.current(key)
        if current is not None and current["file"] == file:
            self.store.pop(key)

    def deploy(self) -> str | None:
        reload = getattr(self.sink.context, "reload", None)
        if reload is None:
            return "no reloader runs here (the daemon deploys taught models; a test sink does not)"
        return reload()

    def rollback(self, key: str):
        with self.training.lock:
            if self.training.state["state"] == "running":
                return _json(409, {"error": "a training is running; roll back when it is done"})
            shown = dict(self.training.state)       # GET /train keeps showing the last training's result
            self.training.state.update(state="running", region=key or None, progress=0.0, error=None)
        try:
            history = self.store.history(key)
            if not history:
                self.training.update(**shown)
                return _json(409, {"error": f"{taught.describe(key)} runs the config's model: nothing to roll back"})
            last = self.store.pop(key)
            why = self.deploy()
            if why is not None:
                regions = self.store.read()
                regions[key] = history
                self.store.write(regions)
                self.training.update(state="failed", error=f"rollback refused: {why}")
                return _json(500, {"error": f"rollback refused, still running {last['file']}: {why}"})
            self.store.forget([last])
            now = history[-2] if len(history) > 1 else None
            log.info("teach: %s rolled back to %s", taught.describe(key), now["file"] if now else "the config's model")
            self.training.update(state="idle", progress=0.0, region=key or None)
            return _json(200, {"region": key or None, "removed": last["file"],
                               "now": now["file"] if now else None, "labels": now["labels"] if now else None})
        except (OSError, ValueError) as exc:
            self.training.update(state="failed", error=f"rollback: {exc}")
            return _json(500, {"error": f"rollback: cannot update {self.store.path}: {exc}"})
