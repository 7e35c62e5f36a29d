"""Soak: the daemon at full speed for N minutes, RSS and open file descriptors sampled every few seconds.

    python tests/soak.py --minutes 30 [--model models/mobilenetv3_small.onnx] [--out docs/]

Two daemons run side by side for the whole time: one on `synthetic://640x480`, one on a looping
640x480 video file. Fails (exit 1) if, after the first minute, RSS grows more than 5 MB or
the number of open fds grows at all. Writes soak.json and soak.png (drawn with OpenCV) to --out.
Not part of the default test run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_runtime.cli.bench.measure import make_video  # noqa: E402

RSS_LIMIT_MB = 5.0
WARMUP_S = 60.0


def sample(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss_kb / 1024.0, len(os.listdir(f"/proc/{pid}/fd"))


def soak(runs: dict[str, tuple[str, list[str]]], model: str, seconds: float, every: float) -> list[dict]:
    """Start one daemon per run, sample them all every `every` seconds, stop them, summarise each."""
    procs = {}
    for name, (source, extra) in runs.items():
        cmd = [sys.executable, "-m", "edge_runtime", "--source", source, "--model", model, "--stats-interval", "60",
               "--log-level", "warning", *extra]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    t0 = time.monotonic()
    points: dict[str, list] = {name: [] for name in runs}
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(every)
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name}: daemon exited {proc.returncode}: "
                                       f"{proc.stderr.read().decode()[-500:]}")
                rss, fds = sample(proc.pid)
                points[name].append((round(time.monotonic() - t0, 1), round(rss, 2), fds))
                print(f"{name}: t={points[name][-1][0]:7.1f}s rss={rss:7.2f} MB fds={fds}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    return [summarise(name, runs[name][0], pts) for name, pts in points.items()]


def summarise(name: str, source: str, points: list) -> dict:
    after = [p for p in points if p[0] >= WARMUP_S] or points
    base_rss, base_fds = after[0][1], after[0][2]
    growth = max(p[1] for p in after) - base_rss
    fd_growth = max(p[2] for p in after) - base_fds
    return {"name": name, "source": source, "points": points, "rss_after_warmup_mb": base_rss,
            "rss_growth_mb": round(growth, 2), "fd_growth": fd_growth,
            "rss_final_mb": points[-1][1], "passed": growth <= RSS_LIMIT_MB and fd_growth <= 0}


def plot(results: list[dict], path: Path) -> None:
    w, h, pad = 1000, 420, 60
    img = np.full((h, w, 3), 255, np.uint8)
    colours = [(200, 110, 30), (30, 130, 240)]
    all_pts = [p for r in results for p in r["points"]]
    tmax = max(p[0] for p in all_pts)
    lo = min(p[1] for p in all_pts) - 2
    hi = max(p[1] for p in all_pts) + 2
    cv2.rectangle(img, (pad, pad // 2), (w - pad // 2, h - pad), (180, 180, 180), 1)
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = int(h - pad - (h - 1.5 * pad) * i / 4)
        cv2.putText(img, f"{v:.0f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for r, colour in zip(results, colours, strict=False):
        pts = [(int(pad + (w - 1.5 * pad) * t / tmax), int(h - pad - (h - 1.5 * pad) * (rss - lo) / (hi - lo)))
               for t, rss, _ in r["points"]]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, f"{r['name']}: RSS growth after 1 min {r['rss_growth_mb']:+.2f} MB, fd growth "
                    f"{r['fd_growth']:+d}", (pad + 10, pad // 2 + 20 + 20 * results.index(r)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, f"RSS (MB) over time (0..{tmax / 60:.0f} min)", (pad, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="minutes to run both daemons")
    ap.add_argument("--model", default=str(REPO / "models" / "mobilenetv3_small.onnx"))
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--out", default=str(REPO / "docs"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "soak.avi", 640, 480)
        results = soak({"synthetic": ("synthetic://640x480", []), "video-loop": (str(video), ["--loop"])},
                       args.model, args.minutes * 60, args.every)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps({"minutes": args.minutes, "model": args.model,
                                               "results": results}, indent=1))
    plot(results, out / "soak.png")
    for r in results:
        print(f"{r['name']}: RSS {r['rss_after_warmup_mb']} MB after 1 min -> {r['rss_final_mb']} MB "
              f"(max growth {r['rss_growth_mb']} MB), fd growth {r['fd_growth']}: "
              f"{'PASS' if r['passed'] else 'FAIL'}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
