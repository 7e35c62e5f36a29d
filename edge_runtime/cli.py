"""`python -m edge_runtime`: parse flags, load config, build the pipeline, run it, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from . import __version__
from . import config as config_mod
from .errors import EXIT_OK, EXIT_UNEXPECTED, ModelError, UserError, first_line

log = logging.getLogger("edge_runtime")

# Flag dest -> config key path, so a bad flag value is reported under the flag's own name.
FLAG_KEYS = {
    "source": ("source", "--source"), "camera": ("camera", "--camera"), "model": ("model", "--model"),
    "threads": ("threads", "--threads"), "lanes": ("lanes", "--lanes"), "batch": ("batch", "--batch"),
    "top_k": ("top_k", "--top-k"),
    "max_frames": ("max_frames", "--max-frames"), "stats_interval": ("stats_interval", "--stats-interval"),
    "loop": ("loop", "--loop"), "realtime": ("realtime", "--realtime"),
    "quiet_predictions": ("quiet_predictions", "--quiet-predictions"),
    "log_predictions": ("log.predictions", "--log-predictions"), "log_level": ("log.level", "--log-level"),
    "mqtt": ("mqtt.url", "--mqtt"), "http": ("http.listen", "--http"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime",
        description="Classify camera frames with an ONNX model; JSON lines on stdout, logs on stderr.",
        epilog="Other commands: `python -m edge_runtime bench --help`. Exit codes: 0 done, "
               "2 usage/config/model error, 1 unexpected.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", metavar="URI",
                     help="csi://N, /dev/videoN, v4l2:///dev/videoN, a video file or file://..., an image "
                          "folder, rtsp://..., http://..., synthetic://WIDTHxHEIGHT[?fps=F]")
    src.add_argument("--camera", type=int, metavar="N",
                     help="camera N: the Pi camera (picamera2) on a Raspberry Pi, /dev/videoN elsewhere")
    p.add_argument("--model", metavar="PATH", help=f"ONNX model (default {config_mod.DEFAULT_MODEL})")
    p.add_argument("--config", metavar="FILE", help="YAML config file; flags override it")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: all cores)")
    p.add_argument("--lanes", type=int, metavar="N",
                   help="sessions working on successive frames side by side, the threads split between them "
                        "(default: 2 for files/folders/unthrottled synthetic, 1 for live sources)")
    p.add_argument("--batch", type=int, metavar="N",
                   help="frames per inference for files, folders and unthrottled synthetic (default: "
                        f"{AUTO_BATCH} when the model takes a batch, else 1); live and --realtime sources: 1")
    p.add_argument("--top-k", type=int, metavar="K", help="labels per prediction (default 5)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    p.add_argument("--stats-interval", type=float, metavar="S", help="seconds between stats lines (default 5)")
    p.add_argument("--loop", action="store_true", default=None, help="restart a file or folder at its end")
    p.add_argument("--realtime", action="store_true", default=None, help="pace a video file at its frame rate")
    p.add_argument("--quiet-predictions", action="store_true", default=None,
                   help="only stats lines on stdout")
    p.add_argument("--log-predictions", action="store_true", default=None,
                   help="also log every prediction (journal) at info level")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--mqtt", metavar="URI",
                   help="publish to MQTT: mqtt://[user:pass@]host[:port]/prefix (mqtts:// for TLS; "
                        "prefix default edge_runtime/<hostname>); more in the config's mqtt: section")
    p.add_argument("--http", metavar="ADDR",
                   help="serve a live view, /metrics, /healthz, /latest and /snapshot.jpg on [ADDRESS:]PORT "
                        "(address default 127.0.0.1; 0.0.0.0:8080 for all interfaces)")
    p.add_argument("--validate-config", action="store_true",
                   help="check the config, model and source string, print the result, exit")
    p.add_argument("--version", action="version", version=f"edge_runtime {__version__}")
    return p


def setup_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps; elsewhere we do.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def overrides_from(args: argparse.Namespace) -> dict:
    return {key: getattr(args, dest) for dest, (key, _flag) in FLAG_KEYS.items()
            if getattr(args, dest, None) is not None}


def warn_untrained(engine) -> None:
    if engine.spec.untrained:
        bar = "!" * 78
        for line in (bar, f"MODEL HAS UNTRAINED (RANDOM) WEIGHTS: {engine.path}",
                     "Its predictions are meaningless. It proves the pipeline runs, nothing more.",
                     "Export trained weights: python models/export.py --weights imagenet (see models/README.md).",
                     bar):
            log.warning(line)


STOP = threading.Event()   # set by SIGTERM/SIGINT, from the first moment main() runs
FORCED_EXIT_AFTER = 5.0    # seconds from SIGTERM/SIGINT to a forced exit


def _forced_exit(message: str) -> None:
    log.warning("%s", message)
    logging.shutdown()
    os._exit(EXIT_OK)


def install_signal_handlers() -> None:
    """Early, before the slow imports and the model load: a SIGTERM during startup still ends cleanly."""

    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        if not STOP.is_set():
            log.info("%s received; stopping", name)
            STOP.set()
            # A clean stop takes well under 2 s. One that does not is blocked in a write to a stdout
            # nobody reads (a file source waits on its reader): nothing more can be delivered anyway.
            timer = threading.Timer(FORCED_EXIT_AFTER, _forced_exit, args=(f"still stopping {FORCED_EXIT_AFTER:.0f} s "
                                    f"after {name} (is the reader of stdout not reading?); exiting now",))
            timer.daemon = True
            timer.start()
        else:
            _forced_exit(f"second {name}; exiting now")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda *_: log.warning(
        "SIGHUP: this version does not reload its config; restart the service to apply changes"))


def run_daemon(args: argparse.Namespace) -> int:
    from .engine import Engine
    from .notify import Notifier
    from .pipeline import Pipeline, PipelineOptions
    from .sinks import LogSink, StdoutSink
    from .stats import Stats
    from .sources import SourceOptions, camera_uri, open_source

    started = time.perf_counter()
    stop = STOP
    flag_names = {key: flag for key, flag in FLAG_KEYS.values()}
    cfg = config_mod.load(args.config, overrides_from(args), flag_names)
    setup_logging(cfg.log.level)

    if cfg.camera is not None:
        uri = camera_uri(cfg.camera)
    elif cfg.source is not None:
        uri = cfg.source
    else:
        raise UserError("no source: give --source URI or --camera N (or `source:` in the config file); "
                        "try --source synthetic://640x480 to see it work without a camera")

    if cfg.model == config_mod.DEFAULT_MODEL and not os.path.exists(cfg.model):
        raise UserError(f"model {cfg.model}: file not found. Make one with `python models/export.py --arch small "
                        f"--weights random --output {cfg.model}` (untrained; see models/README.md for "
                        "trained weights) or point --model at your .onnx file")
    try:
        live = open_source(uri, SourceOptions(loop=cfg.loop, realtime=cfg.realtime)).live
    except UserError:
        live = True     # a bad source string is reported below, after the model's own checks
    threads = cfg.threads or os.cpu_count() or 1
    lanes = lane_count(cfg.lanes, live, threads)
    paced = live or cfg.realtime
    per_lane = max(1, threads // lanes)
    # One-thread lanes share one session: onnxruntime's Run is thread-safe and, with one thread, runs
    # in its caller's thread, so the lanes share the weights and the arena instead of a copy each.
    # Several threads a lane: a session each, with its own thread pool. onnxruntime's memory pattern
    # (one planned block per input shape) kept the shared session fastest, but cost separate batched
    # sessions 15 MB each for nothing (measured, docs/BENCHMARKS.md). The session is made with all
    # this from the start: one made and thrown away would leave ~15 MB behind. A paced source (a camera)
    # leaves time between frames: worker threads then sleep instead of spin-waiting through it.
    engine = Engine(cfg.model, per_lane, config_spec=cfg.model_spec, config_file=args.config,
                    config_dir=config_mod.config_dir(args.config),
                    mem_pattern=per_lane == 1 or batch_size(cfg.batch, paced) == 1, spinning=not paced)
    batch = batch_size(cfg.batch, paced, engine)
    spec = engine.spec.input
    source_options = SourceOptions(loop=cfg.loop, realtime=cfg.realtime, width=cfg.capture.width,
                                   height=cfg.capture.height, fps=cfg.capture.fps, timeout_s=cfg.capture.timeout,
                                   model_size=tuple(spec.size), model_resize=spec.resize,
                                   max_image_pixels=cfg.capture.max_image_pixels)
    probe = open_source(uri, source_options)      # refuse a bad source string before anything starts

    if args.validate_config:
        print(f"config OK: source {uri}; model {engine.describe()}")
        return EXIT_OK

    import cv2
    # Capture and preprocessing already run beside inference; OpenCV's own worker pool would only
    # fight onnxruntime's threads for the same cores (measured: slower, not faster).
    cv2.setNumThreads(1)
    log.info("model: %s", engine.describe())
    warn_untrained(engine)
    engines = lane_engines(engine, lanes)
    sessions = list(dict.fromkeys(engines))
    for e in sessions:
        e.warm_up(batch=batch)
    if lanes > 1 or batch > 1:
        shared = ", one shared session" if lanes > 1 and len(sessions) == 1 else ""
        log.info("%d lanes of %d thread(s)%s, %d frame(s) per inference: frames classified side by side, "
                 "published in order", lanes, engines[0].threads, shared, batch)

    stats = Stats()
    stdout_sink = StdoutSink(predictions=not cfg.quiet_predictions, live=probe.live, stats=stats, stop=stop)
    sinks = [stdout_sink, LogSink(predictions=cfg.log.predictions)]
    http_sink = None
    if cfg.http.listen:
        from .sinks.http import HttpSink
        http_sink = HttpSink(cfg.http, stats)
        sinks.append(http_sink)
    if cfg.mqtt.url:
        from .sinks.mqtt import MqttSink
        sinks.append(MqttSink(cfg.mqtt, cfg.publish, stats, config_dir=config_mod.config_dir(args.config)))
    options = PipelineOptions(top_k=cfg.top_k, max_frames=cfg.max_frames, stats_interval=cfg.stats_interval,
                              batch=batch,
                              stall_timeout=cfg.capture.stall_timeout,
                              reconnect_initial=cfg.capture.reconnect_initial_delay,
                              reconnect_max=cfg.capture.reconnect_max_delay)
    pipeline = Pipeline(lambda: open_source(uri, source_options), engines, sinks, options, stop=stop,
                        notifier=Notifier(), stats=stats)
    if http_sink is not None:
        http_sink.attach(pipeline)
    log.info("source: %s (%s); ready in %.2f s", uri, "live" if pipeline.live else "frame by frame",
             time.perf_counter() - started)
    pipeline.run()
    pipeline.finish()
    if pipeline.output_closed:
        _silence_stdout()
    elif stdout_sink.stuck:
        # The reader stopped reading: a blocked write would hang the interpreter's exit flush.
        log.warning("stdout reader is not reading; exiting without waiting for it")
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


def lane_count(configured: int, live: bool, threads: int) -> int:
    """Lanes to run. Auto (0): a file, folder or unthrottled synthetic source is about throughput, so
    two single-thread lanes overlap one frame's Python work with the other's inference (measured,
    docs/BENCHMARKS.md); a live source is about latency on the newest frame: one lane, all threads."""
    if configured:
        return configured
    return 1 if live or threads < 2 else 2


def lane_engines(engine, lanes: int) -> list:
    """The engine of each lane: one-thread lanes share `engine`'s session; lanes of several threads get
    a session each (a shared thread pool would serialise their parallel sections)."""
    if engine.threads == 1:
        return [engine] * lanes
    return [engine] + [engine.sibling(engine.threads) for _ in range(lanes - 1)]


AUTO_BATCH = 4   # frames per session.run for throughput sources (measured, docs/BENCHMARKS.md)


def batch_size(configured: int, paced: bool, engine=None) -> int:
    """Frames per session.run. A live or paced source: 1, a frame is classified as soon as it is the
    newest, never held back to fill a batch. Files, folders, unthrottled synthetic: auto (0) is
    AUTO_BATCH when the model's batch axis is dynamic, else 1. Batching amortises onnxruntime's
    per-operator overhead: more frames per second, each frame's result a few ms later.
    Without an engine: the batch intended before the model is loaded."""
    if paced:
        if configured > 1 and engine is not None:
            log.info("batch %d applies to files, folders and unthrottled synthetic sources; this source "
                     "is classified one frame at a time", configured)
        return 1
    if engine is not None and not engine.batch_axis_dynamic:
        if configured > 1:
            raise ModelError(engine.path, f"its input '{engine.input.name}' has a fixed batch size of "
                             f"{engine.input.shape[0]}, so --batch/batch: {configured} cannot be used "
                             "(use 1, or 0 for auto)")
        return 1
    return configured or AUTO_BATCH


def _silence_stdout() -> None:
    """stdout's reader is gone: point fd 1 at /dev/null so the interpreter's exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench import main as bench_main
        return bench_main(argv[1:])
    install_signal_handlers()
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or "info")
    try:
        return run_daemon(args)
    except UserError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except (ImportError, MemoryError) as exc:
        # A broken install or a memory limit (MemoryMax=, ulimit -v) too low to map the libraries.
        log.error("cannot load a library: %s: %s (broken install, or a memory limit too low?)",
                  type(exc).__name__, first_line(exc))
        return EXIT_UNEXPECTED
    except Exception:
        log.exception("unexpected error (please report it with this traceback)")
        return EXIT_UNEXPECTED
