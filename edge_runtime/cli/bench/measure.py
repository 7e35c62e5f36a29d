"""bench's measurements: the bare session and lanes, each stage alone, the real daemon as a subprocess,
the machine they ran on, and the generated clip they use."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime import __version__
from edge_runtime import config as config_mod
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


def daemon_plan(model: str, threads: int, source: str) -> tuple[RunPlan, Engine]:
    """The plan the daemon makes for `source` with default settings (lanes, batch, sessions)."""
    cfg = config_mod.Config(model=model, threads=threads)
    return load_model(plan_run(cfg, source), cfg)


def _best(runs: list[dict]) -> dict:
    return dict(max(runs, key=lambda b: b["fps"]), fps_rounds=[b["fps"] for b in runs])
