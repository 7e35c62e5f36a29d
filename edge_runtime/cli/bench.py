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
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime import __version__
from edge_runtime import config as config_mod
from edge_runtime.config import DEFAULT_MODEL
from edge_runtime.engines import Engine, load_engine
from edge_runtime.core.plan import RunPlan, load_model, plan_run
from edge_runtime.engines.lanes import lane_engines


# CPU features that change onnxruntime's kernels, and so the numbers: INT8 dot products (VNNI on x86,
# asimddp/i8mm on ARM) and vector width. Printed so that two boards' results can be compared.
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    features: list[str] = []
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {k.strip().lower(): v.strip() for k, v in info.items()}
        # x86: "model name"; Raspberry Pi: "Model" (the board); other ARM: "Hardware" or the CPU part number.
        cpu = info.get("model name") or info.get("model") or info.get("hardware") or \
            (f"ARM implementer {info['cpu implementer']} part {info['cpu part']}" if "cpu part" in info else cpu)
        flags = set((info.get("flags") or info.get("features") or "").split())
        features = [f for f in KERNEL_FEATURES if f in flags]
    except OSError:
        pass
    import importlib.metadata

    import onnxruntime as ort
    try:
        litert = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        litert = None
    return {"cpu": cpu, "cpu_features": features, "cores": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__, "ai_edge_litert": litert, "opencv": cv2.__version__,
            "numpy": np.__version__, "edge_runtime": __version__}


def _stat(samples_ms: list[float]) -> dict:
    arr = np.asarray(samples_ms, dtype=np.float64)
    return {"median_ms": round(float(np.median(arr)), 4), "p95_ms": round(float(np.percentile(arr, 95)), 4),
            "n": int(arr.size)}


def _time_calls(fn, seconds: float, min_calls: int = 20) -> list[float]:
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < min_calls:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def bare_session(model: str, threads: int, seconds: float, batch: int = 1) -> dict:
    """The limit: session.run on a ready tensor, nothing else (`batch` images per call; fps counts images)."""
    engine = load_engine(model, threads)
    engine.warm_up(10, batch=batch)
    shape = (batch,) + engine.input_shape()[1:]
    tensor = np.random.default_rng(0).integers(0, 255, shape).astype(engine.input_dtype())
    call = bare_call(engine, tensor)
    t0 = time.perf_counter()
    samples = _time_calls(call, seconds)
    wall = time.perf_counter() - t0
    return {"threads": engine.threads, "batch": batch, "fps": round(batch * len(samples) / wall, 2), **_stat(samples)}


def bare_call(engine: Engine, tensor: np.ndarray):
    """The engine's bare run on `tensor` as a zero-argument call: onnxruntime's session.run itself (what
    the numbers in docs/BENCHMARKS.md were taken with), else the engine's run_batch."""
    session = getattr(engine, "session", None)
    if session is not None:
        run, names, feed = session.run, engine.output_names, {engine.input_name: tensor}
        return lambda: run(names, feed)
    return lambda: engine.run_batch(tensor)


def bare_lanes(model: str, plan: RunPlan, seconds: float) -> dict:
    """The daemon's inference with nothing else around it: its lanes (threads, sessions and batch made
    from the daemon's own plan), each calling session.run back to back, side by side. The most frames
    the daemon's inference can deliver on these cores."""
    import threading

    lanes, per_lane, batch = plan.lanes, plan.per_lane, plan.batch
    engines = lane_engines(load_engine(model, per_lane, mem_pattern=plan.mem_pattern, spinning=plan.spinning), lanes)
    for engine in dict.fromkeys(engines):
        engine.warm_up(10, batch=batch)
    shape = (batch,) + engines[0].input_shape()[1:]
    tensor = np.random.default_rng(0).integers(0, 255, shape).astype(engines[0].input_dtype())
    calls = [0] * lanes
    end = time.perf_counter() + seconds

    def lane(i: int) -> None:
        call = bare_call(engines[i], tensor)
        while time.perf_counter() < end:
            call()
            calls[i] += 1

    workers = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    return {"lanes": lanes, "threads_per_lane": per_lane, "batch": batch,
            "fps": round(batch * sum(calls) / wall, 2)}


def ceiling(stage_ms: dict, lanes_fps: float, inference_cores: int, cores: int, bare_fps: float) -> dict:
    """Upper bound of the daemon's frames/s per source on this machine: the lanes' inference as
    measured bare, plus each stage's median for every frame, all on the machine's cores (and one
    decoder, read one frame at a time). Stage medians are warm-cache figures, so the bound is optimistic."""
    inference_core_ms = inference_cores * 1000.0 / lanes_fps
    other_ms = sum(stage_ms[k]["median_ms"] for k in ("preprocess", "postprocess", "publish"))
    out = {"inference_core_ms": round(inference_core_ms, 4), "other_ms": round(other_ms, 4)}
    for source in ("synthetic", "video"):
        capture_ms = stage_ms[f"capture_{source}"]["median_ms"]
        per_frame = inference_core_ms + capture_ms + other_ms
        fps = min(lanes_fps, cores * 1000.0 / per_frame, 1000.0 / capture_ms if capture_ms > 0 else float("inf"))
        out[source] = {"fps": round(fps, 1), "ratio_vs_bare": round(fps / bare_fps, 3),
                       "core_ms_per_frame": round(per_frame, 4), "capture_ms": capture_ms}
    return out


def stages(model: str, threads: int, width: int, height: int, video: Path, seconds: float) -> dict:
    """Each stage alone, on the same frames the pipeline sees."""
    from edge_runtime.engines.postprocess import Postprocessor
    from edge_runtime.engines.preprocess import Preprocessor
    from edge_runtime.util.jsonline import dumps
    from edge_runtime.sources import SourceOptions, open_source

    engine = load_engine(model, threads)
    engine.warm_up(10)
    synthetic = open_source(f"synthetic://{width}x{height}", SourceOptions())
    synthetic.open()
    video_src = open_source(str(video), SourceOptions(loop=True))
    video_src.open()
    pre = Preprocessor(engine.spec.input)
    post = Postprocessor(engine.spec, 5)
    frame = synthetic.read().image
    tensor = pre(frame)
    output = engine.run(tensor)
    top = post.top(output)
    record = {"type": "prediction", "frame": 123456, "ts": time.time(), "source": "synthetic://640x480",
              "top": top, "latency_ms": {"preprocess": 0.2, "inference": 1.8, "total": 2.5}}
    devnull = open(os.devnull, "w")
    part = seconds / 6

    def publish():
        devnull.write(dumps(record) + "\n")
        devnull.flush()

    result = {
        "capture_synthetic": _stat(_time_calls(synthetic.read, part)),
        "capture_video": _stat(_time_calls(video_src.read, part)),
        "preprocess": _stat(_time_calls(lambda: pre(frame, tensor), part)),
        "inference": _stat(_time_calls(lambda: engine.run(tensor), part * 2)),
        "postprocess": _stat(_time_calls(lambda: post.top(output), part)),
        "publish": _stat(_time_calls(publish, part)),
    }
    video_src.close()
    devnull.close()
    return result


def make_video(path: Path, width: int, height: int, frames: int = 300) -> Path:
    """A 640x480 MJPEG clip with motion, written with OpenCV (what a user's recording would be)."""
    from edge_runtime.sources.synthetic import SyntheticSource
    src = SyntheticSource("synthetic://", width, height, None)
    src.open()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for _ in range(frames):
        writer.write(np.ascontiguousarray(src.read().image))
    writer.release()
    return path


def video_info(path: Path) -> dict:
    """What the bench decodes: codec (FourCC as OpenCV reports it), frame size and frame count."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "?"
        return {"path": str(path), "codec": codec, "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT))}
    finally:
        cap.release()


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def daemon_run(model: str, threads: int, source: str, *extra: str, max_frames: int | None = None,
               out_dir: Path) -> dict:
    """The real daemon in a subprocess, predictions on stdout into a file; returns its own final stats
    plus what the OS measured (CPU time, peak RSS) and time to first prediction."""
    out = out_dir / f"daemon-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "edge_runtime", "--source", source, "--model", model, "--threads", str(threads),
           "--stats-interval", "3600", "--log-level", "warning", *extra]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    with open(out, "w") as stdout:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
        first = None
        peak_kb = 0
        while True:
            # WNOHANG keeps the child's own rusage for us; VmHWM is its true peak RSS (ru_maxrss of a
            # forked child starts at the parent's RSS, so it would report ours).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            if first is None and out.stat().st_size > 0:
                first = time.perf_counter() - t0
            time.sleep(0.002 if first is None else 0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"daemon failed ({proc.returncode}): {err.strip()[-800:]}")
    final = lines[-1]
    preds = [x for x in lines if x["type"] == "prediction"]
    totals = [p["latency_ms"]["total"] for p in preds]
    return {
        "source": source, "fps": final["fps"]["inference"], "frames": final["frames_processed"],
        "dropped": final["frames_dropped"], "rss_mb_final": final["rss_mb"],
        "peak_rss_mb": round(peak_kb * 1024 / 1e6, 1),     # MB of 10^6 bytes, as rss_mb in the stats line
        "cpu_cores_used": round((usage.ru_utime + usage.ru_stime) / wall, 2),
        "first_prediction_s": round(first, 3) if first is not None else None,
        "latency_ms": final["latency_ms"],
        "total_latency_ms": _stat(totals) if totals else None,
        "prediction_lines": len(preds),
        "cpu_s_per_hour": final.get("cpu_s_per_hour"),
        "events": [[e["region"], e["from"], e["to"], e["frame"]] for e in lines if e["type"] == "event"],
    }


def chart(result: dict, path: Path) -> None:
    """Per-stage bars and the thread sweep, drawn with OpenCV."""
    w, h = 1100, 540
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = f"edge_runtime bench - {result['machine']['cpu'][:60]} - {Path(result['model']).name}"
    if "video" in result:
        v = result["video"]
        title += f" - video: {v['codec']} {v['width']}x{v['height']}"
    cv2.putText(img, title, (20, 30), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    if result.get("noisy"):
        cv2.putText(img, f"NOISY RUN: bare rounds spread {result['noisy']['spread']:.0%}", (700, 50), font, 0.5,
                    (0, 0, 200), 1, cv2.LINE_AA)
    if result.get("untrained"):
        cv2.putText(img, "untrained weights (speed only)", (700, 70), font, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    ratios = ", ".join(f"{name} {run['ratio_vs_bare']:.2f}x" for name, run in result.get("daemon", {}).items()
                       if "ratio_vs_bare" in run)
    cv2.putText(img, f"daemon / bare session.run ({result.get('lanes', 1)} lanes, batch {result.get('batch', 1)}): "
                f"{ratios}", (20, 50), font, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    if "ceiling" in result:
        bounds = ", ".join(f"{name} {result['ceiling'][name]['ratio_vs_bare']:.2f}x" for name in ("synthetic", "video"))
        cv2.putText(img, f"ceiling on these cores (inference + each frame's other work): {bounds}", (20, 68),
                    font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)

    # Left: per-stage median (bar) and p95 (tick), ms.
    names = list(result["stages"])
    vals = [result["stages"][n]["median_ms"] for n in names]
    p95s = [result["stages"][n]["p95_ms"] for n in names]
    top = max(p95s + [1e-3])
    x0, y0, bw, bh = 40, 500, 60, 380
    cv2.putText(img, "per-stage time, ms (bar: median, line: p95)", (x0, 92), font, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    for i, (name, v, p) in enumerate(zip(names, vals, p95s, strict=True)):
        x = x0 + i * (bw + 20)
        bar = int(bh * v / top)
        cv2.rectangle(img, (x, y0 - bar), (x + bw, y0), (200, 130, 40), -1)
        yp = y0 - int(bh * p / top)
        cv2.line(img, (x, yp), (x + bw, yp), (30, 30, 200), 2)
        cv2.putText(img, f"{v:.3f}", (x, y0 - bar - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, name.replace("capture_", "cap_")[:11], (x - 4, y0 + 18), font, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)

    # Right: thread sweep, FPS of bare session.run vs the daemon.
    sweep = result.get("thread_sweep", [])
    x1 = 600
    cv2.putText(img, "threads: fps bare session.run (blue) vs daemon (orange)", (x1, 92), font, 0.5,
                (60, 60, 60), 1, cv2.LINE_AA)
    if sweep:
        peak = max(max(s["bare_fps"], s["pipeline_fps"]) for s in sweep)
        for i, s in enumerate(sweep):
            x = x1 + 20 + i * 130
            for j, (key, colour) in enumerate((("bare_fps", (200, 130, 40)), ("pipeline_fps", (40, 140, 250)))):
                bar = int(bh * s[key] / peak)
                cv2.rectangle(img, (x + j * 50, y0 - bar), (x + j * 50 + 45, y0), colour, -1)
                cv2.putText(img, f"{s[key]:.0f}", (x + j * 50, y0 - bar - 6), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(img, f"{s['threads']} thr ({s['ratio']:.2f}x)", (x, y0 + 18), font, 0.42, (0, 0, 0), 1,
                        cv2.LINE_AA)
    cv2.imwrite(str(path), img)


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


def daemon_plan(model: str, threads: int, source: str) -> tuple[RunPlan, Engine]:
    """The plan the daemon makes for `source` with default settings (lanes, batch, sessions)."""
    cfg = config_mod.Config(model=model, threads=threads)
    return load_model(plan_run(cfg, source), cfg)


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
    repo_copy = Path(__file__).resolve().parents[2] / DEFAULT_MODEL
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
                from edge_runtime.cli.bench_gate import make_scene_video
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
            from edge_runtime.cli.bench_gate import gate_bench
            result["gate"] = gate_bench(args, threads, video, tmp_dir, daemon_run)
            return write_results(result, out_dir, chart_too=False)
        if args.regions:
            result["regions"] = regions_bench(args, threads, video, tmp_dir)
            return write_results(result, out_dir, chart_too=False)
        if args.compare:
            from edge_runtime.cli.bench_engines import compare_models
            try:
                result["compare"] = compare_models(args, [args.model, *args.compare], threads, video, tmp_dir,
                                                   daemon_run)
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


def _best(runs: list[dict]) -> dict:
    return dict(max(runs, key=lambda b: b["fps"]), fps_rounds=[b["fps"] for b in runs])


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


REGIONS_TARGET = 1.1     # N regions may cost at most N x (bare batch-N cost per image) + 10%


def region_flags(n: int) -> list[str]:
    """N regions side by side, as vertical strips covering the frame."""
    flags: list[str] = []
    for i in range(n):
        flags += ["--region", f"r{i}={i / n:.6f},0,{1 / n:.6f},1"]
    return flags


def lane_breakdown(run: dict, lanes: int, frame_ms: float, bare_run_ms: float) -> dict:
    """Where one lane's time per frame goes, from the daemon's own stats line (p50 of its preprocessing,
    here the crops, and of its session.run), against bare session.run in the same lanes: with `lanes`
    lanes side by side a lane takes lanes x frame_ms per frame; the rest is everything else."""
    cycle = lanes * frame_ms
    crops = run["latency_ms"]["preprocess"]["p50"]
    session_run = run["latency_ms"]["inference"]["p50"]
    return {"cycle": round(cycle, 3), "crops": crops, "session_run": session_run,
            "bare_session_run": round(bare_run_ms, 3), "rest": round(cycle - crops - session_run, 3)}


def regions_bench(args, threads: int, video: Path, tmp_dir: Path) -> dict:
    """The daemon with N regions of one model (N crops per frame, one session.run per frame when the
    batch axis is dynamic) against bare session.run at batch N, in alternating rounds, on synthetic
    frames (no decoding: what the regions themselves cost; the target applies here) and on the video
    (decoding included). A frame's cost is compared with N x the bare per-image cost at batch N (a
    model with a fixed batch: N bare runs of one); the target is at most 10% more."""
    import dataclasses

    n = args.regions
    sources = {"synthetic": (f"synthetic://{args.size}",), "video": (str(video), "--loop")}
    # The daemon's own plan (its lanes and threads), whose engine also says whether the batch axis is
    # dynamic; bare in that arrangement at batch N is the part of the cost that is the regions' own work,
    # apart from one session of all threads vs one-thread lanes.
    plan, engine = daemon_plan(args.model, threads, sources["synthetic"][0])
    dynamic = engine.batch_axis_dynamic
    del engine
    bare_batch = n if dynamic else 1
    plan = dataclasses.replace(plan, batch=bare_batch)
    bares, lane_bares, runs = [], [], {name: [] for name in sources}
    for r in range(args.repeats):
        bares.append(bare_session(args.model, threads, args.seconds, batch=bare_batch))
        lane_bares.append(bare_lanes(args.model, plan, args.seconds))
        for name, (source, *extra) in sources.items():
            runs[name].append(daemon_run(args.model, threads, source, *extra, *region_flags(n),
                                         max_frames=args.frames, out_dir=tmp_dir))
        print(f"round {r + 1}/{args.repeats}: bare batch {bare_batch} {bares[-1]['fps']:.1f} images/s; daemon "
              f"with {n} regions " + ", ".join(f"{k} {v[-1]['fps']:.1f} frames/s" for k, v in runs.items()))
    bare = _best(bares)
    bare_frame_ms = n * 1000.0 / bare["fps"]            # N images at the bare per-image cost
    out = {"regions": n, "batch_axis_dynamic": dynamic, "bare": bare,
           "bare_ms_per_frame": round(bare_frame_ms, 4), "target_ratio": REGIONS_TARGET}
    lanes_bare = _best(lane_bares)
    lanes_frame_ms = n * 1000.0 / lanes_bare["fps"]
    out["bare_lanes"] = lanes_bare
    out["bare_lanes_ms_per_frame"] = round(lanes_frame_ms, 4)
    print(f"bare in the daemon's arrangement ({plan.lanes} lane(s) x {plan.per_lane} thread(s), batch {bare_batch}): "
          f"{lanes_bare['fps']:.1f} images/s (rounds {out['bare_lanes']['fps_rounds']})")
    for name, got in runs.items():
        best = max(got, key=lambda d: d["fps"])
        frame_ms = 1000.0 / best["fps"]
        out[name] = dict(best, ms_per_frame=round(frame_ms, 4), cost_ratio=round(frame_ms / bare_frame_ms, 3),
                         cost_ratio_vs_lanes=round(frame_ms / lanes_frame_ms, 3), fps_rounds=[d["fps"] for d in got])
        out[name]["lane_ms"] = lane_breakdown(best, plan.lanes, frame_ms, plan.lanes * lanes_frame_ms)
        print(f"{n} regions on {name}: the daemon takes {frame_ms:.3f} ms a frame ({best['fps']:.1f} frames/s, "
              f"{best['prediction_lines']} region records, cpu {best['cpu_cores_used']} cores); bare session.run "
              f"at batch {bare_batch}: {bare_frame_ms:.3f} ms for {n} images. Cost ratio "
              f"{out[name]['cost_ratio']:.3f} (best rounds); against bare in the daemon's arrangement "
              f"{out[name]['cost_ratio_vs_lanes']:.3f}")
        lane = out[name]["lane_ms"]
        print(f"  where a lane's time goes, per frame (p50): crops {lane['crops']:.3f} ms, session.run "
              f"{lane['session_run']:.3f} ms (bare, same lanes: {lane['bare_session_run']:.3f}), the rest (top-k, "
              f"records, states, hand-off, waits) {lane['rest']:.3f} ms; {plan.lanes} lane(s) side by side")
    out["meets_target"] = out["synthetic"]["cost_ratio"] <= REGIONS_TARGET
    print(f"target: N regions cost at most N x the bare batch-{bare_batch} cost per image + 10% (ratio <= "
          f"{REGIONS_TARGET}, without decoding): {'met' if out['meets_target'] else 'NOT met'}")
    return out
