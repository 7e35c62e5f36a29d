"""What the classify gate's change detector costs per region, and how it sees noise: a tiny script, not a
test (no timing in tests). `python tests/gate_cost.py [--size 640x480] [--seconds 2]`.

Compares the gate's detector (edge_runtime/watch/gate.py: small grey copy + per-pixel difference) with
OpenCV's background subtractor (MOG2) on the small copy and on the full region, on a real photo with
per-frame Gaussian sensor noise and after a real change (another photo). Prints the median and p95 ms per
region and whether each flagged the noisy frames (false changes) and the change. Timings on a shared or
busy machine are noisy: run it twice, or on an idle board.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_runtime.watch.gate import ClassifyConfig, Gate, small_grey  # noqa: E402

FIXTURES = Path(os.environ.get("EDGE_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))


def timed(fn, seconds: float) -> list[float]:
    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(out) < 50:
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def show(name: str, ms: list[float]) -> None:
    print(f"{name:42s} median {np.median(ms):.4f} ms  p95 {np.percentile(ms, 95):.4f} ms  (n={len(ms)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--noise", type=float, default=6.0, help="sensor noise, grey levels (sigma) per pixel")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)        # as the daemon runs OpenCV
    rng = np.random.default_rng(1)
    base = cv2.resize(cv2.imread(str(FIXTURES / "photos" / "bird.png")), (width, height)).astype(np.float32)
    other = cv2.resize(cv2.imread(str(FIXTURES / "photos" / "owl.jpg")), (width, height))
    noisy = [np.clip(base + rng.normal(0, args.noise, base.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    print(f"region {width}x{height}, noise sigma {args.noise}; cv2 threads 1; {os.cpu_count()} cores "
          f"(load {os.getloadavg()[0]:.2f}: a shared machine, timings are noisy)")

    gate = Gate(ClassifyConfig(motion=True), settle=0)
    i = [0]

    def gate_step():
        i[0] += 1
        gate.decide(noisy[i[0] % 20], float(i[0]))

    show("gate: small grey + difference", timed(gate_step, args.seconds))
    show("  of which small grey copy", timed(lambda: small_grey(noisy[3]), args.seconds))
    gate = Gate(ClassifyConfig(motion=True), settle=0)
    false = sum(gate.decide(f, float(k)) for k, f in enumerate(noisy)) - 1
    caught = gate.decide(other, 99.0)
    print(f"  gate: false changes on {len(noisy) - 1} noisy frames: {false}; the change seen: {caught}")

    for label, prep in (("MOG2 on the small grey copy", small_grey), ("MOG2 on the full region", lambda f: f)):
        mog = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=16, detectShadows=False)
        for f in noisy:
            mog.apply(prep(f))
        show(label, timed(lambda m=mog, p=prep: m.apply(p(noisy[7])), args.seconds))
        mask = mog.apply(prep(noisy[5]))
        fg_noise = np.count_nonzero(mask) / mask.size
        fg_change = np.count_nonzero(mog.apply(prep(other))) / mask.size
        print(f"  {label}: foreground on a noisy frame {fg_noise:.3%}, on the change {fg_change:.1%}")


if __name__ == "__main__":
    main()
