"""The FPS dip while the Teach page's training runs beside inference (issue 24.2), on the real daemon.

    nice .venv/bin/python tests/bench_teach.py [--per-label 50] [--threads 2] [--window 20] [--fps 0]
                                               [--model MODEL] [--json OUT.json]

A looped video of test_train.py's state scene (the chip bag in the region or not, lighting and jitter)
feeds the daemon with one region; the region's dataset (--per-label crops a label) is written into
http.collect_dir as the page names them. The daemon's live FPS (/stats.json, predictions over the last
2 s) is sampled every 0.5 s for --window seconds before, during POST /train ... GET /train = done, and
--window seconds after. --fps 0 (default) plays the video as fast as it decodes (throughput: the worst
case for a dip); --fps N paces it at N frames/s like a camera (does the daemon keep up while training?).
Prints one table and, with --json, the numbers. Not a test: the machine running it decides them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Daemon, free_port  # noqa: E402
from test_teach_http import BACKBONE, make_dataset, request, write_config  # noqa: E402
from test_train import bin_scene  # noqa: E402


def video(path: Path, fps: float, frames: int = 61) -> Path:
    rng = np.random.default_rng(5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps or 25.0, (640, 480))
    for i in range(frames):
        writer.write(cv2.resize(bin_scene(i % 2 == 0, rng), (640, 480)))
    writer.release()
    return path


def live_fps(base: str) -> float | None:
    try:
        status, body = request(base + "/stats.json")
    except OSError:                  # the daemon's server is not listening yet (URLError is an OSError)
        return None
    return json.loads(body)["fps"] if status == 200 else None


def sample(base: str, seconds: float | None, until=None) -> list[float]:
    values, end = [], time.monotonic() + (seconds or 1e9)
    while time.monotonic() < end and (until is None or not until()):
        fps = live_fps(base)
        if fps is not None:
            values.append(fps)
        time.sleep(0.5)
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-label", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--window", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=0.0, help="0: as fast as it decodes; N: paced like a camera")
    p.add_argument("--model", default=str(BACKBONE))
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-teach-") as tmp:
        tmp = Path(tmp)
        data = tmp / "dataset"
        make_dataset(data, per_label=args.per_label)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = write_config(tmp, video(tmp / "scene.avi", args.fps), data, port, realtime=bool(args.fps),
                              threads=args.threads, model=args.model)
        daemon = Daemon("--config", config)
        try:
            daemon.wait_for(lambda: (live_fps(base) or 0) > 0, 120)
            time.sleep(3)                                  # past the warm-up
            before = sample(base, args.window)
            status, body = request(base + "/train?region=bin", "POST")
            assert status == 202, body
            t0 = time.monotonic()

            def done():
                return json.loads(request(base + "/train")[1])["state"] != "running"
            during = sample(base, None, until=done)
            train_s = time.monotonic() - t0
            result = json.loads(request(base + "/train")[1])
            after = sample(base, args.window)
        finally:
            daemon.stop()
    if result["state"] != "done":
        print(f"training {result['state']}: {result['error']}", file=sys.stderr)
        return 1

    def med(values):
        return statistics.median(values) if values else float("nan")
    out = {"model": Path(args.model).name, "threads": args.threads, "paced_fps": args.fps or None,
           "images": result["images"], "train_s": round(train_s, 2), "accuracy": result["accuracy"],
           "fps_before": med(before), "fps_during": med(during), "fps_during_min": min(during, default=float("nan")),
           "fps_after": med(after)}
    out["dip_pct"] = round(100 * (1 - out["fps_during"] / out["fps_before"]), 1) if out["fps_before"] else None
    print(f"{out['images']} images trained in {out['train_s']} s (accuracy {out['accuracy']:.1%}); daemon FPS "
          f"before {out['fps_before']:.1f}, during {out['fps_during']:.1f} (min {out['fps_during_min']:.1f}), "
          f"after {out['fps_after']:.1f}: dip {out['dip_pct']} % ({args.threads} inference threads, "
          f"{'paced at %g fps' % args.fps if args.fps else 'unthrottled'})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
