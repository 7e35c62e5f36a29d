"""Is --fuse-preprocess faster end to end? Times frame -> logits both ways on this machine.

    python models/bench_fused.py [--arch small] [--frame 640 480] [--runs 200] [--threads 2]

Unfused: the runtime's Preprocessor makes the normalised float NCHW tensor, then session.run.
Fused:   the Preprocessor only crops/resizes/reorders to uint8 NHWC; the graph does the rest.
Both models are exported (random weights: timing only) into a temporary folder and checked to agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.engines.preprocess import Preprocessor  # noqa: E402

from models.common import ort_session, positive_int, run_main  # noqa: E402


def timed(fns: dict, runs: int) -> dict:
    """{key: (median, 90th percentile) ms}, the functions interleaved run by run so that a busy
    machine's slow spells hit every variant alike."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - start) * 1e3)
    result = {}
    for key, t in times.items():
        t.sort()
        result[key] = (statistics.median(t), t[int(0.9 * (len(t) - 1))])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_fused.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("small", "large"), default="small")
    p.add_argument("--frame", type=positive_int, nargs=2, default=(640, 480), metavar=("W", "H"))
    p.add_argument("--runs", type=positive_int, default=200)
    p.add_argument("--threads", type=positive_int, default=2, help="onnxruntime threads (default 2)")
    args = p.parse_args(argv)
    from models import export      # imports torch: after the arguments, so --help is instant

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (args.frame[1], args.frame[0], 3), dtype=np.uint8)
    frame = cv2.GaussianBlur(noise, (0, 0), 3)     # something image-like rather than pure noise
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for fused in (False, True):
            paths[fused] = Path(tmp) / f"{'fused' if fused else 'plain'}.onnx"
            argv_export = ["--arch", args.arch, "--weights", "random", "--output", str(paths[fused])]
            export.main(argv_export + (["--fuse-preprocess"] if fused else []))
        fns, outputs = {}, {}
        for fused, path in paths.items():
            session = ort_session(path, args.threads)
            spec = ms.from_metadata(session.get_modelmeta().custom_metadata_map, str(path))
            prep = Preprocessor(spec.input)
            buf = prep.new_buffer()
            name = session.get_inputs()[0].name
            outputs[fused] = session.run(None, {name: prep(frame, buf)})[0]
            fns[(fused, "preprocess")] = lambda prep=prep, buf=buf: prep(frame, buf)
            fns[(fused, "inference")] = lambda s=session, n=name, buf=buf: s.run(None, {n: buf})
            fns[(fused, "end to end")] = (lambda s=session, n=name, prep=prep, buf=buf:
                                          s.run(None, {n: prep(frame, buf)}))
        results = timed(fns, args.runs)
    scale = float(np.abs(outputs[False]).max())
    print(f"\nmobilenet_v3_{args.arch}, {args.frame[0]}x{args.frame[1]} BGR frame, onnxruntime "
          f"{args.threads} threads, median / p90 of {args.runs} runs (ms):")
    print(f"  fused vs unfused outputs: max abs diff {np.abs(outputs[True] - outputs[False]).max():.2e} "
          f"(outputs up to {scale:.2g})")
    for stage in ("preprocess", "inference", "end to end"):
        (u, u90), (f, f90) = results[(False, stage)], results[(True, stage)]
        print(f"  {stage:<11} unfused {u:7.3f} / {u90:7.3f}   fused {f:7.3f} / {f90:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_fused.py"))
