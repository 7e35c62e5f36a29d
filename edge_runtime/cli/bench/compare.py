"""`bench --model A.onnx --model B.tflite`: two or more models (and so their engines) on the same frames.

For each model, in alternating rounds (the machine's speed drifts; best of `--repeats` on both sides):
the bare engine on the same decoded frames, each preprocessed by its own model's description, one frame a
run (what a camera gets); then the real daemon on the same looped clip. Every figure is a ratio to the
first model's, measured in the same run on the same machine. Also: how often the models' top-1 agree on
those frames (a converted model that names other classes shows here before it ships).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_runtime.cli.bench.measure import daemon_run
from edge_runtime.engines import load_engine

COMPARE_FRAMES = 64     # decoded once, each model's tensors made from the same images


def decode_frames(video: Path, n: int = COMPARE_FRAMES) -> list[np.ndarray]:
    from edge_runtime.sources import SourceOptions, open_source

    source = open_source(str(video), SourceOptions(loop=True))
    source.open()
    try:
        return [np.ascontiguousarray(source.read().image) for _ in range(n)]
    finally:
        source.close()


def _bare(engine, tensors: list[np.ndarray], seconds: float) -> dict:
    """One frame a run, cycling through the frames' tensors, for `seconds` (at least one pass)."""
    samples, i = [], 0
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end or i < len(tensors):
        t = tensors[i % len(tensors)]
        s = time.perf_counter()
        engine.run(t)
        samples.append((time.perf_counter() - s) * 1000.0)
        i += 1
    wall = time.perf_counter() - t0
    return {"fps": round(len(samples) / wall, 2), "median_ms": round(float(np.median(samples)), 4),
            "p95_ms": round(float(np.percentile(samples, 95)), 4)}


def compare_models(args, models: list[str], threads: int, video: Path, tmp_dir: Path) -> dict:
    """The comparison, printed as a table and returned for the JSON. ModelError for a model that cannot load."""
    from edge_runtime.engines.postprocess import Postprocessor
    from edge_runtime.engines.preprocess import Preprocessor

    engines = [load_engine(m, threads) for m in models]
    frames = decode_frames(video)
    tensors, tops = [], []
    for engine in engines:
        pre, post = Preprocessor(engine.spec.input), Postprocessor(engine.spec, 1)
        ts = [pre(frame) for frame in frames]
        engine.warm_up(10)
        tensors.append(ts)
        tops.append([post.top(engine.run(t))[0]["index"] for t in ts])
    bares: list[list[dict]] = [[] for _ in models]
    daemons: list[list[dict]] = [[] for _ in models]
    for r in range(args.repeats):
        for i, (model, engine) in enumerate(zip(models, engines, strict=True)):
            bares[i].append(_bare(engine, tensors[i], args.seconds))
            daemons[i].append(daemon_run(model, threads, str(video), "--loop", max_frames=args.frames, out_dir=tmp_dir))
        print(f"round {r + 1}/{args.repeats}: " + "; ".join(
            f"{Path(m).name} ({e.kind}) bare {b[-1]['fps']:.1f} fps, daemon {d[-1]['fps']:.1f} fps"
            for m, e, b, d in zip(models, engines, bares, daemons, strict=True)))
    rows = []
    for i, (model, engine) in enumerate(zip(models, engines, strict=True)):
        bare = max(bares[i], key=lambda b: b["fps"])
        daemon = max(daemons[i], key=lambda d: d["fps"])
        rows.append({"model": model, "engine": engine.kind, "describe": engine.describe(),
                     "size_mb": round(Path(model).stat().st_size / 1e6, 2),
                     "bare": dict(bare, fps_rounds=[b["fps"] for b in bares[i]]),
                     "daemon": {"fps": daemon["fps"], "fps_rounds": [d["fps"] for d in daemons[i]],
                                "cpu_cores_used": daemon["cpu_cores_used"], "peak_rss_mb": daemon["peak_rss_mb"],
                                "first_prediction_s": daemon["first_prediction_s"]}})
    first = rows[0]
    for i, row in enumerate(rows):
        row["bare_ratio_vs_first"] = round(row["bare"]["fps"] / first["bare"]["fps"], 3)
        row["daemon_ratio_vs_first"] = round(row["daemon"]["fps"] / first["daemon"]["fps"], 3)
        same_classes = engines[i].num_outputs == engines[0].num_outputs
        row["top1_agreement_with_first"] = (round(float(np.mean(np.equal(tops[i], tops[0]))), 3)
                                            if same_classes else None)
    print_table(rows, threads, len(frames))
    return {"threads": threads, "frames": len(frames), "models": rows}


def print_table(rows: list[dict], threads: int, frames: int) -> None:
    print(f"\nengines on the same {frames} frames, {threads} thread(s), best of rounds (ratio: to the first row)")
    head = f"{'model':40s} {'engine':12s} {'MB':>6s} {'bare fps':>9s} {'ms':>8s} {'ratio':>6s} " \
           f"{'daemon fps':>10s} {'ratio':>6s} {'rss MB':>7s} {'top-1 =':>7s}"
    print(head)
    for row in rows:
        agree = row["top1_agreement_with_first"]
        print(f"{Path(row['model']).name[:40]:40s} {row['engine']:12s} {row['size_mb']:6.2f} "
              f"{row['bare']['fps']:9.1f} {row['bare']['median_ms']:8.3f} {row['bare_ratio_vs_first']:6.2f} "
              f"{row['daemon']['fps']:10.1f} {row['daemon_ratio_vs_first']:6.2f} {row['daemon']['peak_rss_mb']:7.1f} "
              f"{'-' if agree is None else f'{agree:.0%}':>7s}")
    if len(rows) == 2:
        a, b = rows
        faster = b if b["daemon"]["fps"] > a["daemon"]["fps"] else a
        slower = a if faster is b else b
        daemon_x = faster["daemon"]["fps"] / slower["daemon"]["fps"]
        bare_x = faster["bare"]["fps"] / slower["bare"]["fps"]
        print(f"{Path(faster['model']).name} ({faster['engine']}) is {daemon_x:.2f}x {Path(slower['model']).name} "
              f"({slower['engine']}) in the daemon, {bare_x:.2f}x bare")
