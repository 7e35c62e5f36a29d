"""The taught models the Teach page made, and which region runs which: a state folder, never the config.

The folder (http.state_dir, default collect_dir/.taught: hidden, so `train` and the gallery never take it
for a label) holds the taught ONNX files and `taught.json`, written atomically (temp file + os.replace):

    {"version": 1, "regions": {"door": [{"file": "door-20261204-210501.onnx", "backbone": "...",
                                          "labels": [...], "accuracy": 0.97, "images": 24, ...}, ...]}}

Each region's list is newest last; the last entry is the one in use and the one before it is kept for
POST /train/rollback (KEEP entries at most; older files are deleted). The whole frame (no regions) is the
key "". `apply(cfg)` puts the models in use on top of the config the daemon loaded, at start and on every
reload, and logs one line per region: so the config file is never rewritten and a restart keeps the
taught model. A state file that cannot be read, or an entry whose file is gone, is one warning and the
config's own model; the daemon never fails to start because of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

from edge_runtime.util import safeio

log = logging.getLogger("edge_runtime.teach")

STATE_FILE = "taught.json"
DEFAULT_DIR = ".taught"      # inside collect_dir
KEEP = 2                     # the model in use and the one a rollback goes back to
FRAME = ""                   # the key of the whole frame (no regions)
MAX_STATE_BYTES = 1 << 20
FILE_PATTERN = re.compile(r"[a-z0-9_-]{1,40}-\d{8}-\d{6}(-\d+)?\.onnx")


def state_dir(cfg) -> Path | None:
    """The folder, or None when the Teach page is off (no http.collect_dir and no http.state_dir)."""
    http = cfg.http
    if http.state_dir:
        return Path(http.state_dir).expanduser()
    if http.collect_dir:
        return Path(http.collect_dir).expanduser() / DEFAULT_DIR
    return None


def describe(key: str) -> str:
    return f"region {key}" if key else "the whole frame"


class Store:
    """taught.json in `folder`: read fresh for every call (the page and the reloader each read it)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE

    def read(self) -> dict[str, list[dict]]:
        """key -> entries (newest last); {} when there is none yet. OSError/ValueError when unreadable."""
        if not self.path.exists():
            return {}
        data = safeio.load_json(safeio.read_text(self.path, limit=MAX_STATE_BYTES), limit=MAX_STATE_BYTES)
        if not isinstance(data, dict) or not isinstance(data.get("regions"), dict):
            raise ValueError("expected {\"version\": 1, \"regions\": {...}}")
        out = {}
        for key, entries in data["regions"].items():
            if isinstance(entries, list):
                good = [e for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)
                        and FILE_PATTERN.fullmatch(e["file"])]
                if good:
                    out[str(key)] = good
        return out

    def write(self, regions: dict[str, list[dict]]) -> None:
        from edge_runtime.teach.train import atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": 1, "regions": regions}, indent=1, sort_keys=True) + "\n"
        atomic_write(self.path, body.encode())

    def current(self, key: str) -> dict | None:
        try:
            entries = self.read().get(key) or []
        except (OSError, ValueError):
            return None
        return entries[-1] if entries else None

    def history(self, key: str) -> list[dict]:
        try:
            return self.read().get(key) or []
        except (OSError, ValueError):
            return []

    def push(self, key: str, entry: dict) -> list[dict]:
        """Make `entry` the one in use; returns the entries dropped (their files are deleted by forget())."""
        regions = self.read()
        entries = regions.get(key, []) + [entry]
        dropped = entries[:-KEEP]
        regions[key] = entries[-KEEP:]
        self.write(regions)
        return dropped

    def pop(self, key: str) -> dict | None:
        """Drop the entry in use (the one before it, or the config's model, is in use next); it is returned."""
        regions = self.read()
        entries = regions.get(key, [])
        if not entries:
            return None
        last = entries.pop()
        if entries:
            regions[key] = entries
        else:
            regions.pop(key, None)
        self.write(regions)
        return last

    def forget(self, entries: list[dict]) -> None:
        for entry in entries:
            try:
                (self.folder / entry["file"]).unlink()
            except OSError:
                pass


def summary(key: str, path: Path, entry: dict) -> str:
    labels = entry.get("labels") or []
    accuracy = entry.get("accuracy")
    acc = f"{accuracy:.1%}" if isinstance(accuracy, (int, float)) else "unknown"
    return (f"taught model for {describe(key)}: {path} (labels {', '.join(map(str, labels))}; held-out accuracy "
            f"{acc}; {entry.get('images', '?')} images)")


def apply(cfg):
    """`cfg` with each region's (or the whole frame's) taught model in use put over its `model:`.
    One log line per region that runs a taught model."""
    folder = state_dir(cfg)
    if folder is None or not (folder / STATE_FILE).exists():
        return cfg
    store = Store(folder)
    try:
        taught = store.read()
    except (OSError, ValueError) as exc:
        log.warning("teach: cannot read %s (%s); running the config's models", safeio.display_path(store.path),
                    getattr(exc, "strerror", None) or exc)
        return cfg

    def model_for(key: str) -> str | None:
        entries = taught.get(key)
        if not entries:
            return None
        path = folder / entries[-1]["file"]
        if not path.is_file():
            log.warning("teach: the taught model for %s is gone (%s); running the config's model",
                        describe(key), safeio.display_path(path))
            return None
        log.info("%s", summary(key, path, entries[-1]))
        return str(path)

    if cfg.regions:
        regions = []
        for region in cfg.regions:
            model = model_for(region.name)
            regions.append(region if model is None else dataclasses.replace(region, model=model))
        unknown = sorted(k for k in taught if k and k not in {r.name for r in cfg.regions})
        if unknown:
            log.warning("teach: taught models for regions no longer configured are not used: %s", ", ".join(unknown))
        return dataclasses.replace(cfg, regions=tuple(regions))
    model = model_for(FRAME)
    if model is None:
        return cfg
    # A taught model describes itself (labels, preprocessing): the config's model_spec was for its own model.
    return dataclasses.replace(cfg, model=model, model_spec=None)
