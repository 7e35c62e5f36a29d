"""`bench --gate`: what the classify gate saves on a static scene, measured in one run on one clip.

The daemon (a subprocess, --realtime: paced at the clip's 20 fps as a camera would be) watches two regions
of the same clip twice, without and with `--classify-motion`; the clip is a still scene with sensor noise
whose right half changes twice a minute (or your own recording: --video). Printed: CPU seconds per hour
each way (the daemon's own `cpu_s_per_hour` over the run, start-up excluded; and the OS's count of the
whole process), their ratio (the issue's target: at most 0.4), the classifications saved, and whether both
runs reported the same state changes (same labels, same order, each within 3 frames).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

GATE_TARGET = 0.4       # the gated daemon's CPU per hour at most this share of the ungated one
FPS = 20.0
REGIONS = ["--region", "still=0,0,0.5,1", "--region", "door=0.5,0,0.5,1"]


def make_scene_video(path: Path, width: int, height: int, seconds: float, seed: int = 0,
                     period: float = 30.0) -> Path:
    """A still scene (smooth texture) with per-frame sensor noise (sigma ~4 grey levels); for the second
    half of every `period` seconds a striped thing stands in the right half: two changes a minute."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    thing = base.copy()
    x0, y0, x1, y1 = width * 17 // 32, height // 16, width * 31 // 32, height * 15 // 16
    stripes = (np.indices((y1 - y0, x1 - x0)).sum(axis=0) // 12 % 2 * 160 + 60).astype(np.uint8)
    thing[y0:y1, x0:x1] = stripes[..., None]
    noises = [np.clip(rng.normal(0, 4, (height, width, 3)), -127, 127).astype(np.int16) for _ in range(32)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for i in range(int(seconds * FPS)):
        scene = thing if (i / FPS) % period >= period / 2 else base
        writer.write(np.clip(scene + noises[i % len(noises)], 0, 255).astype(np.uint8))
    writer.release()
    return path


def same_changes(a: list, b: list, frames: int = 3) -> bool:
    """Same labels in the same order, each change within `frames` frames of the other run's."""
    return [e[:3] for e in a] == [e[:3] for e in b] and \
        all(abs(x[3] - y[3]) <= frames for x, y in zip(a, b, strict=False))


def gate_bench(args, threads: int, video: Path, tmp_dir: Path, daemon_run) -> dict:
    """`daemon_run`: bench.daemon_run (passed in: bench imports this module, not the other way round)."""
    settings: list[str] = []
    if not args.video:
        # The generated scene is no photo: an ImageNet model's top-1 for it is sure of itself at 0.2-0.3,
        # not 0.5 (the default threshold), yet steady frame to frame; a lower threshold lets its changes
        # be state changes, for both runs alike.
        cfg = tmp_dir / "gate-bench.yaml"
        cfg.write_text("publish: {threshold: 0.15}\n")
        settings = ["--config", str(cfg)]
    runs = {}
    for name, extra in (("ungated", "--no-classify-motion"), ("gated", "--classify-motion")):
        runs[name] = daemon_run(args.model, threads, str(video), "--realtime", "--top-k", "1", extra, *REGIONS,
                                *settings, out_dir=tmp_dir)
        run = runs[name]
        print(f"  {name:8s} CPU {run['cpu_s_per_hour']:.0f} s/hour (daemon's own; whole process as the OS counts "
              f"it: {run['cpu_cores_used'] * 3600:.0f}), {run['prediction_lines']} region records, "
              f"{len(run['events'])} state changes", flush=True)
    ratio = runs["gated"]["cpu_s_per_hour"] / max(runs["ungated"]["cpu_s_per_hour"], 1e-9)
    ratio_os = runs["gated"]["cpu_cores_used"] / max(runs["ungated"]["cpu_cores_used"], 1e-9)
    same = same_changes(runs["ungated"]["events"], runs["gated"]["events"])
    out = {"fps": FPS, "regions": 2, "runs": runs, "cpu_ratio": round(ratio, 3), "cpu_ratio_os": round(ratio_os, 3),
           "target_ratio": GATE_TARGET, "meets_target": ratio <= GATE_TARGET, "same_state_changes": same,
           "classifications_saved": 1 - runs["gated"]["prediction_lines"] / max(runs["ungated"]["prediction_lines"], 1)}
    print(f"static scene, 2 regions, {FPS:.0f} fps: CPU per hour with the gate / without = {ratio:.3f} "
          f"(whole process: {ratio_os:.3f}); target <= {GATE_TARGET}: {'met' if out['meets_target'] else 'NOT met'}; "
          f"{out['classifications_saved']:.0%} of the classifications saved; same state changes: "
          f"{'yes' if same else 'NO'}")
    if not same:
        print(f"  ungated: {runs['ungated']['events']}\n  gated:   {runs['gated']['events']}", file=sys.stderr)
    return out
