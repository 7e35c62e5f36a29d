"""`python -m edge_runtime bench`: how close the daemon gets to the bare model, measured in one run.

Everything is a ratio of numbers taken on the same machine, model and thread count within one run:
bare `session.run` on a prepared tensor is the limit; the real daemon (a subprocess, predictions on
stdout to a file) is measured against it on synthetic://WxH and on a video file; each stage is
timed alone; a live 30 fps source gives the capture-to-publish latency. Results: a JSON file and a
PNG chart drawn with OpenCV (no plotting dependency on the device).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_runtime import config as config_mod
from edge_runtime.config import DEFAULT_MODEL
from edge_runtime.core.plan import RunPlan
from edge_runtime.cli.bench.chart import chart
from edge_runtime.cli.bench.measure import (
    _best, bare_lanes, bare_session, ceiling, daemon_plan, daemon_run, machine, make_video, stages, video_info,
)
from edge_runtime.cli.bench.regions import regions_bench


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m edge_runtime bench", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Takes about 3-4 minutes with the defaults on a 2-core machine (each round: the bare runs and "
               "6 daemon runs; then the stages, a live run and the thread sweep); more with --repeats or "
               "--frames. Run it on an otherwise idle machine: a run whose rounds disagree by more than "
               f"{NOISY:.0%} is flagged as noisy.")
    ap.add_argument("--config", metavar="FILE",
                    help="the daemon's config file (e.g. /etc/edge-runtime/config.yaml): measure its model with "
                         "its threads, as the daemon would load them (relative paths are to the file's folder); "
                         "--model and --threads override it, as they do the daemon's")
    ap.add_argument("--model", metavar="PATH", action="append", dest="models",
                    help=f"the ONNX model to measure, or a .tflite one (default: the --config file's, else "
                         f"{DEFAULT_MODEL} in the current directory, else the one in this installation's "
                         "repository). Twice or more (--model A.onnx --model B.tflite): instead, compare the "
                         "models and their engines on the same frames, each against the first")
    ap.add_argument("--int8", metavar="MODEL", help="an INT8 model to compare against --model")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the main comparison (default: the --config file's `threads`; 0 = all cores)")
    ap.add_argument("--size", default="640x480", help="synthetic/video frame size")
    ap.add_argument("--video", metavar="FILE",
                    help="a clip to decode instead of the generated 640x480 MJPEG one, e.g. your camera's own "
                         "recording: decoding cost depends on the codec")
    ap.add_argument("--seconds", type=float, default=4.0, help="time per bare/stage measurement")
    ap.add_argument("--frames", type=int, default=1500, help="frames per daemon run")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of bare + daemon runs; the ratio is best daemon round / best bare round")
    ap.add_argument("--no-sweep", action="store_true", help="skip the thread sweep")
    ap.add_argument("--regions", type=int, metavar="N",
                    help="instead: the cost of N regions (one model) - the daemon classifying N regions of each "
                         "video frame against bare session.run at batch N, in alternating rounds")
    ap.add_argument("--gate", action="store_true",
                    help="instead: the classify gate on a static scene - CPU per hour of the daemon watching 2 "
                         "regions of a 20 fps clip, paced, with and without --classify-motion (the clip: "
                         "--gate-seconds of a still, noisy scene that changes twice a minute, or --video)")
    ap.add_argument("--gate-seconds", type=float, default=120.0, help="length of the --gate clip (each run "
                    "takes this long)")
    ap.add_argument("--gate-period", type=float, default=30.0,
                    help="the --gate scene changes every half of this many seconds (30: twice a minute)")
    ap.add_argument("--out", default="bench-results", help="folder for the JSON and PNG results")
    return ap


NOISY = 0.20   # bare rounds further apart than this (of the best): the machine was busy or drifting


def flag_noise(result: dict) -> None:
    """Rounds of the same bare measurement that disagree: say so in the output, the JSON and the chart."""
    fps = result["bare"]["fps_rounds"]
    spread = (max(fps) - min(fps)) / max(fps) if fps and max(fps) > 0 else 0.0
    if spread > NOISY:
        result["noisy"] = {"spread": round(spread, 3), "bare_fps_rounds": fps}
        print(f"WARNING: noisy run: the bare rounds disagree by {spread:.0%} ({min(fps):.0f}-{max(fps):.0f} fps); "
              "something else is using the CPU, or the machine's speed drifts. Compare ratios with care, or "
              "re-run on an idle machine with more --repeats.")


def default_model() -> str:
    """DEFAULT_MODEL from the current directory as the daemon finds it, else the repository's copy (an
    editable install run from elsewhere: `bench` then works from any folder)."""
    if Path(DEFAULT_MODEL).exists():
        return DEFAULT_MODEL
    repo_copy = Path(__file__).resolve().parents[3] / DEFAULT_MODEL
    return str(repo_copy) if repo_copy.exists() else DEFAULT_MODEL


def settle_model(args: argparse.Namespace) -> None:
    """args.model and args.threads as the daemon would have them: from --config (ConfigError if it is
    wrong), the flags on top; without --config, the default model (default_model) and all cores."""
    models = getattr(args, "models", None) or []
    args.model, args.compare = (models[0] if models else None), models[1:]
    if args.config:
        overrides = {k: v for k, v in (("model", args.model), ("threads", args.threads)) if v is not None}
        cfg = config_mod.load(args.config, overrides, {"model": "--model", "threads": "--threads"})
        args.model, args.threads = cfg.model, cfg.threads
    else:
        args.model = args.model or default_model()
        args.threads = args.threads or 0


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.util.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        settle_model(args)
    except UserError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return exc.exit_code
    missing = [m for m in args.compare if not Path(m).exists()]
    if missing:
        print(f"model {missing[0]} not found", file=sys.stderr)
        return 2
    if not Path(args.model).exists():
        print(f"model {args.model} not found; get one: python -m edge_runtime fetch-model --output {args.model} "
              "(add --untrained offline: speed is the same)", file=sys.stderr)
        return 2
    if args.regions is not None and not 1 <= args.regions <= 64:
        print(f"--regions: expected 1 to 64, got {args.regions}", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.split("x"))
    threads = args.threads or os.cpu_count() or 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "model": args.model, "threads": threads, "frame_size": args.size,
                    "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"machine: {result['machine']}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        try:
            if args.gate:
                from edge_runtime.cli.bench.gate import make_scene_video
                video = Path(args.video) if args.video else \
                    make_scene_video(tmp_dir / "scene.avi", width, height, args.gate_seconds,
                                     period=args.gate_period)
            else:
                video = Path(args.video) if args.video else make_video(tmp_dir / "bench.avi", width, height)
            result["video"] = dict(video_info(video), generated=not args.video)
        except ValueError as exc:
            print(f"--video: {exc}", file=sys.stderr)
            return 2
        v = result["video"]
        print(f"video: {'generated ' if v['generated'] else ''}{v['path']} ({v['codec']}, "
              f"{v['width']}x{v['height']}, {v['frames']} frames, {'paced' if args.gate else 'looped'})")
        if args.gate:
            from edge_runtime.cli.bench.gate import gate_bench
            result["gate"] = gate_bench(args, threads, video, tmp_dir, daemon_run)
            return write_results(result, out_dir, chart_too=False)
        if args.regions:
            result["regions"] = regions_bench(args, threads, video, tmp_dir)
            return write_results(result, out_dir, chart_too=False)
        if args.compare:
            from edge_runtime.cli.bench.compare import compare_models
            try:
                result["compare"] = compare_models(args, [args.model, *args.compare], threads, video, tmp_dir)
            except UserError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return exc.exit_code
            return write_results(result, out_dir, chart_too=False)
        plan, engine = daemon_plan(args.model, threads, f"synthetic://{width}x{height}")
        result["lanes"], result["batch"] = plan.lanes, plan.batch
        result["untrained"] = engine.spec.untrained
        if engine.spec.untrained:
            print(f"note: {args.model} has UNTRAINED weights: the speed is real, its predictions are not")
        del engine
        sources = {"synthetic": (f"synthetic://{width}x{height}",), "video": (str(video), "--loop")}
        rounds, bares = run_rounds(args, plan, sources, tmp_dir)
        summarize_bare(result, bares, plan)
        flag_noise(result)
        result["stages"] = stages(args.model, threads, width, height, video, args.seconds)
        for name, st in result["stages"].items():
            print(f"  stage {name:18s} median {st['median_ms']:.4f} ms  p95 {st['p95_ms']:.4f} ms")
        result["preprocess_vs_inference"] = round(result["stages"]["preprocess"]["median_ms"]
                                                  / result["stages"]["inference"]["median_ms"], 3)
        runs = summarize_runs(result, rounds, plan)
        report_ceiling(result, runs, plan)
        runs["live_30fps"] = live_run(args.model, threads, width, height, result["stages"], tmp_dir)
        result["daemon"] = runs
        if args.int8:
            result["int8"] = int8_compare(args, threads, width, height, result["bare"]["fps"], tmp_dir)
        result["thread_sweep"] = [] if args.no_sweep else thread_sweep(args, width, height, tmp_dir)
    return write_results(result, out_dir)


def write_results(result: dict, out_dir: Path, chart_too: bool = True) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1))
    if chart_too:
        png_path = out_dir / f"bench-{stamp}.png"
        chart(result, png_path)
        print(f"wrote {json_path} and {png_path}")
    else:
        print(f"wrote {json_path}")
    return 0


def run_rounds(args, plan: RunPlan, sources: dict, tmp_dir: Path) -> tuple[dict[str, list[dict]], dict[str, list]]:
    """This machine's speed drifts (shared cores, turbo, neighbours): bare and daemon runs alternate
    in `--repeats` rounds, each round's daemon runs right after its bare run. The daemon runs with its
    own plan, and with what each part contributes: one frame per inference, and the first design
    (one session, one frame at a time)."""
    threads, batch, lanes = plan.threads, plan.batch, plan.lanes
    kinds = {"": (), "_batch1": ("--batch", "1"), "_one_lane": ("--lanes", "1", "--batch", "1")}
    if batch == 1:
        del kinds["_batch1"]
    if lanes == 1:
        del kinds["_one_lane"]
    variants = [(name + kind, extra) for kind, extra in kinds.items() for name in sources]
    rounds: dict[str, list[dict]] = {name: [] for name, _ in variants}
    bares: dict[str, list] = {"bare": [], "batched": [], "lanes": []}
    for r in range(args.repeats):
        bare = bare_session(args.model, threads, args.seconds)
        bares["bare"].append(bare)
        if batch > 1:
            bares["batched"].append(bare_session(args.model, threads, args.seconds, batch=batch))
        if lanes > 1:
            bares["lanes"].append(bare_lanes(args.model, plan, args.seconds))
        for name, extra in variants:
            source, *src_extra = sources[name.split("_")[0]]
            run = daemon_run(args.model, threads, source, *src_extra, *extra, max_frames=args.frames,
                             out_dir=tmp_dir)
            run["ratio_vs_bare"] = round(run["fps"] / bare["fps"], 3)
            rounds[name].append(run)
        print(f"round {r + 1}/{args.repeats}: bare {bare['fps']:.1f} fps"
              + (f" (batch {batch}: {bares['batched'][-1]['fps']:.1f})" if bares["batched"] else "") + "; "
              + ", ".join(f"{n} {v[-1]['ratio_vs_bare']:.3f}x" for n, v in rounds.items()))
    return rounds, bares


def summarize_bare(result: dict, bares: dict[str, list], plan: RunPlan) -> None:
    result["bare"] = _best(bares["bare"])
    print(f"bare session.run: {result['bare']['fps']:.1f} fps (best of {len(bares['bare'])} rounds "
          f"{result['bare']['fps_rounds']}), median {result['bare']['median_ms']:.3f} ms")
    if bares["batched"]:
        # Not the limit (that is one frame per call), but the model's own limit at the batch
        # the daemon uses: how much of the gain is batching itself.
        result["bare_batched"] = _best(bares["batched"])
        print(f"bare session.run, {plan.batch} frames per call: {result['bare_batched']['fps']:.1f} fps "
              f"(best of rounds {result['bare_batched']['fps_rounds']})")
    if bares["lanes"]:
        result["bare_lanes"] = _best(bares["lanes"])
        print(f"bare session.run in the daemon's {plan.lanes} lanes side by side, {plan.batch} frame(s) per call: "
              f"{result['bare_lanes']['fps']:.1f} fps (best of rounds {result['bare_lanes']['fps_rounds']})")


def summarize_runs(result: dict, rounds: dict[str, list[dict]], plan: RunPlan) -> dict:
    """Headline ratio: best daemon round ÷ best bare round. A slow phase of the machine drags either
    side down; best-of-N on both sides compares the two at the machine's full speed. The per-round
    ratios (each against the bare run just before it) are kept beside it."""
    runs = {}
    for name, got in rounds.items():
        ratios = [x["ratio_vs_bare"] for x in got]
        best = max(got, key=lambda x: x["fps"])
        runs[name] = dict(best, ratio_vs_bare=round(best["fps"] / result["bare"]["fps"], 3), ratio_rounds=ratios,
                          ratio_median=round(float(np.median(ratios)), 3))
        one_lane, one_frame = name.endswith("_one_lane"), name.endswith(("_one_lane", "_batch1"))
        note = f"{1 if one_lane else plan.lanes} lane(s), batch {1 if one_frame else plan.batch}"
        versus = ""
        if not one_frame and "bare_batched" in result:
            runs[name]["ratio_vs_bare_batched"] = round(best["fps"] / result["bare_batched"]["fps"], 3)
            versus = f", {runs[name]['ratio_vs_bare_batched']:.3f}x bare at batch {plan.batch}"
        print(f"daemon on {name} ({note}): {best['fps']:.1f} fps = {runs[name]['ratio_vs_bare']:.3f}x "
              f"bare{versus} (best of rounds; per round {ratios}, median {runs[name]['ratio_median']:.3f}x); "
              f"cpu {best['cpu_cores_used']} cores, "
              f"peak rss {best['peak_rss_mb']} MB, first prediction {best['first_prediction_s']} s")
    return runs


def report_ceiling(result: dict, runs: dict, plan: RunPlan) -> None:
    """What the cores allow at all: the daemon's own inference arrangement, measured bare, plus each
    frame's other work on the same cores. The daemon's ratio cannot exceed this bound's."""
    lanes_fps = result.get("bare_lanes", result["bare_batched"] if plan.batch > 1 else result["bare"])["fps"]
    result["ceiling"] = ceiling(result["stages"], lanes_fps, plan.lanes * plan.per_lane, os.cpu_count() or 1,
                                result["bare"]["fps"])
    for name in ("synthetic", "video"):
        bound = result["ceiling"][name]
        bound["daemon_share"] = round(runs[name]["fps"] / bound["fps"], 3)
        print(f"ceiling on {name}: {bound['fps']:.0f} fps = {bound['ratio_vs_bare']:.3f}x bare "
              f"(core time a frame: inference {result['ceiling']['inference_core_ms']:.3f} ms + capture "
              f"{bound['capture_ms']:.3f} + preprocess/postprocess/publish {result['ceiling']['other_ms']:.3f}, "
              f"on {os.cpu_count()} cores); the daemon reaches {bound['daemon_share']:.0%} of it")


def live_run(model: str, threads: int, width: int, height: int, stage_ms: dict, tmp_dir: Path) -> dict:
    live = daemon_run(model, threads, f"synthetic://{width}x{height}?fps=30", max_frames=150, out_dir=tmp_dir)
    budget = stage_ms["inference"]["median_ms"] + 1000.0 / 30
    live["latency_budget_ms"] = round(budget, 3)
    live["p95_within_budget"] = live["total_latency_ms"]["p95_ms"] <= budget
    print(f"live 30 fps: capture-to-publish p95 {live['total_latency_ms']['p95_ms']:.2f} ms "
          f"(budget: one inference + one frame interval = {budget:.2f} ms); cpu {live['cpu_cores_used']} cores "
          f"(including start-up)")
    return live


def int8_compare(args, threads: int, width: int, height: int, fp32_fps: float, tmp_dir: Path) -> dict:
    int8_bare = bare_session(args.int8, threads, args.seconds)
    int8_run = daemon_run(args.int8, threads, f"synthetic://{width}x{height}", max_frames=args.frames,
                          out_dir=tmp_dir)
    out = {"model": args.int8, "bare": int8_bare, "daemon": int8_run,
           "speedup_bare": round(int8_bare["fps"] / fp32_fps, 3),
           "size_mb": round(Path(args.int8).stat().st_size / 1e6, 2),
           "fp32_size_mb": round(Path(args.model).stat().st_size / 1e6, 2)}
    print(f"INT8: bare {int8_bare['fps']:.1f} fps ({out['speedup_bare']:.2f}x FP32), daemon {int8_run['fps']:.1f} fps")
    return out


def thread_sweep(args, width: int, height: int, tmp_dir: Path) -> list[dict]:
    sweep = []
    for n in range(1, (os.cpu_count() or 1) + 1):
        bare = bare_session(args.model, n, args.seconds / 2)
        run = daemon_run(args.model, n, f"synthetic://{width}x{height}", max_frames=args.frames // 2,
                         out_dir=tmp_dir)
        sweep.append({"threads": n, "bare_fps": bare["fps"], "pipeline_fps": run["fps"],
                      "ratio": round(run["fps"] / bare["fps"], 3)})
        print(f"threads {n}: bare {bare['fps']:.1f} fps, daemon {run['fps']:.1f} fps ({sweep[-1]['ratio']:.3f}x)")
    return sweep


