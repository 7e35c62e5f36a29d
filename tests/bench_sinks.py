"""Benchmark (not a test): what the network sinks cost the inference loop.

In one process, the real Pipeline runs a tiny model on synthetic://640x480 (unthrottled, every frame
processed) with these sink sets, interleaved over several rounds:

  a  stdout only, to /dev/null                                   (the baseline)
  b  + MQTT to a live Mosquitto broker
  c  + MQTT to a black-holed broker (accepts TCP, never answers)
  d  + HTTP with an MJPEG client that never reads
  e  + HTTP with an MJPEG client that reads (JPEG encoding at http.mjpeg_fps)
  f  + MQTT (live) + HTTP (reading client): everything at once

For each it prints the loop's throughput (median over rounds), the ratio to (a), and the time
spent inside each sink's prediction() call (the only cost the loop can see).

    .venv/bin/python tests/bench_sinks.py [--frames 1500] [--rounds 3] [--threads 1] [--json out.json]

Needs the `mosquitto` binary for (b) and (f); they are skipped without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from edge_runtime import config as config_mod  # noqa: E402
from edge_runtime.engines.ort import Engine  # noqa: E402
from edge_runtime.core.pipeline import Pipeline, PipelineOptions  # noqa: E402
from edge_runtime.sinks import SinkContext, StdoutSink  # noqa: E402
from edge_runtime.web.http import HttpSink  # noqa: E402
from edge_runtime.sinks.mqtt import MqttSink  # noqa: E402
from edge_runtime.sources import SourceOptions, open_source  # noqa: E402
from edge_runtime.core.stats import Stats  # noqa: E402
from harness import free_port  # noqa: E402
from tiny_model import make_random_model  # noqa: E402

READER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /stream.mjpg HTTP/1.0\\r\\n\\r\\n")
while s.recv(1 << 16):
    pass
"""


class Timed:
    """Wraps a sink; records the duration of every prediction() call."""

    def __init__(self, sink):
        self.sink = sink
        self.name = sink.name
        self.calls: list[float] = []
        self.first = self.last = 0.0

    def prediction(self, record, frame):
        t0 = time.perf_counter()
        self.sink.prediction(record, frame)
        t1 = time.perf_counter()
        self.calls.append(t1 - t0)
        if not self.first:
            self.first = t0
        self.last = t1

    def stats(self, line):
        self.sink.stats(line)

    def close(self):
        self.sink.close()


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int] | None:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if binary is None:
        return None
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


def run_once(engine: Engine, kind: str, frames: int, env: dict) -> dict:
    stats = Stats()
    devnull = open(os.devnull, "w")
    sinks = [StdoutSink(predictions=True, stream=devnull)]
    clients: list = []
    publish = config_mod.PublishConfig()
    if kind in ("b", "f"):
        sinks.append(MqttSink(config_mod.MqttConfig(url=f"mqtt://127.0.0.1:{env['broker']}/bench"), publish))
    if kind == "c":
        sinks.append(MqttSink(config_mod.MqttConfig(url=f"mqtt://127.0.0.1:{env['hole']}/bench"), publish))
    http = None
    if kind in ("d", "e", "f"):
        http = HttpSink(config_mod.HttpConfig(listen="127.0.0.1:0"))
        sinks.append(http)
    timed = [Timed(s) for s in sinks]
    options = SourceOptions(model_size=tuple(engine.spec.input.size), model_resize=engine.spec.input.resize)
    pipeline = Pipeline(lambda: open_source("synthetic://640x480", options), engine, timed,
                        PipelineOptions(max_frames=frames, stats_interval=1.0), live=False,
                        source_uri="synthetic://640x480", stats=stats)
    context = SinkContext(stats=stats, model_info=engine.info(), health=pipeline.health)
    for sink in sinks:
        sink.start(context)
    if http is not None:
        port = http.address[1]
        if kind == "d":
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", port))
            stuck.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")       # and never reads
            clients.append(stuck)
        else:
            clients.append(subprocess.Popen([sys.executable, "-c", READER, str(port)]))
        deadline = time.monotonic() + 5
        while http.stream_clients < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    pipeline.run()
    first = timed[0]
    fps = (len(first.calls) - 1) / max(first.last - first.first, 1e-9)
    pipeline.finish()
    extra = {k: v for k, v in stats.extra.items() if k == "mqtt"}      # final counts, after close()
    if http is not None:
        extra["http"] = {"stream_clients": http.stream_clients, "frames_encoded": http.frames_encoded}
    for c in clients:
        if isinstance(c, subprocess.Popen):
            c.kill()
            c.wait()
        else:
            c.close()
    devnull.close()
    per_sink = {t.name: sorted(t.calls) for t in timed}
    span = max(first.last - first.first, 1e-9)
    share = {t.name: sum(t.calls) / span for t in timed}        # of the loop's wall time, inside prediction()
    return {"fps": fps, "calls": per_sink, "share": share, "extra": extra, "processed": len(first.calls)}


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1e6 if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1500, help="frames per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    model = make_random_model(work / "tiny.onnx")
    engine = Engine(str(model), args.threads)
    engine.warm_up()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)                      # completes TCP handshakes, never reads or answers
    env = {"hole": hole.getsockname()[1]}
    broker = start_broker(work)
    kinds = ["a", "b", "c", "d", "e", "f"]
    if broker is None:
        print("mosquitto not found (apt-get install mosquitto): skipping b and f", file=sys.stderr)
        kinds = ["a", "c", "d", "e"]
    else:
        env["broker"] = broker[1]
    labels = {"a": "stdout only (to /dev/null)", "b": "+ MQTT, live broker", "c": "+ MQTT, black-holed broker",
              "d": "+ HTTP, MJPEG client never reads", "e": "+ HTTP, MJPEG client reading",
              "f": "+ MQTT live + HTTP reading"}
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    try:
        run_once(engine, "a", min(300, args.frames), env)          # warm caches, imports, threads
        for r in range(args.rounds):
            for k in kinds:
                results[k].append(run_once(engine, k, args.frames, env))
                print(f"round {r + 1} {k}: {results[k][-1]['fps']:.1f} fps", file=sys.stderr)
    finally:
        hole.close()
        if broker is not None:
            broker[0].terminate()
            broker[0].wait(5)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(x["fps"] for x in results["a"])
    print(f"\nsynthetic://640x480, tiny model, {args.threads} onnxruntime thread(s), {args.frames} frames x "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'':3}{'sinks':36}{'fps (median)':>13}{'vs a':>8}   prediction() per call, µs p50/p99/max "
          "[share of the loop's time]")
    summary = {}
    for k in kinds:
        fps = statistics.median(x["fps"] for x in results[k])
        calls: dict[str, list[float]] = {}
        for run in results[k]:
            for name, values in run["calls"].items():
                calls.setdefault(name, []).extend(values)
        share = {name: statistics.median(run["share"][name] for run in results[k]) for name in calls}
        cost = "  ".join(f"{name} {pct(sorted(v), .5):.1f}/{pct(sorted(v), .99):.1f}/{max(v) * 1e6:.0f} "
                         f"[{share[name] * 100:.2f}%]" for name, v in calls.items())
        print(f"{k:3}{labels[k]:36}{fps:13.1f}{fps / base:8.3f}   {cost}")
        summary[k] = {"label": labels[k], "fps": [x["fps"] for x in results[k]], "fps_median": fps,
                      "ratio": fps / base, "extra": results[k][-1]["extra"], "loop_share": share,
                      "call_us": {n: {"p50": pct(sorted(v), .5), "p99": pct(sorted(v), .99), "max": max(v) * 1e6}
                                  for n, v in calls.items()}}
    for k in kinds:
        if summary[k]["extra"]:
            print(f"{k}: last run's counters {json.dumps(summary[k]['extra'])}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
