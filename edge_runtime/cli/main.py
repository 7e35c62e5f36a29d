"""`python -m edge_runtime`: parse flags, load config, build the pipeline, run it, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time

from edge_runtime import __version__
from edge_runtime import config as config_mod
from edge_runtime.util.errors import EXIT_OK, EXIT_UNEXPECTED, EXIT_USAGE, UserError, first_line, preparing
from edge_runtime.util.redact import one_line, sanitise_logging

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
    "classify_motion": ("classify.motion", "--classify-motion"),
    "classify_interval": ("classify.interval", "--classify-interval"),
}


# The subcommands: name -> (module with main(argv) -> exit code, what it is for).
# A command lives with its part (teach/, modelzoo/); adding one is one module and one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-model": ("edge_runtime.modelzoo.fetch", "MobileNetV3 ImageNet weights, no PyTorch needed"),
    "collect": ("edge_runtime.teach.collect", "pictures for your own classes"),
    "train": ("edge_runtime.teach.train", "teach them on the board"),
    "bench": ("edge_runtime.cli.bench.command", "the daemon's speed against a bare session.run"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime",
        description="Classify camera frames with an ONNX model; JSON lines on stdout, logs on stderr.",
        epilog="Other commands: " + ", ".join(f"`{name} --help` ({what})" for name, (_, what) in COMMANDS.items())
               + ". Exit codes: 0 done, 2 usage/config/model error, 1 unexpected.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", metavar="URI",
                     help="csi://N, /dev/videoN, v4l2:///dev/videoN, a video file or file://..., an image "
                          "folder, rtsp://..., http://..., synthetic://WIDTHxHEIGHT[?fps=F]")
    src.add_argument("--camera", type=int, metavar="N",
                     help="camera N: the Pi camera (picamera2) on a Raspberry Pi, /dev/videoN elsewhere")
    p.add_argument("--model", metavar="PATH",
                   help=f"ONNX model, or .tflite (LiteRT: ./install.sh --litert) (default {config_mod.DEFAULT_MODEL})")
    p.add_argument("--config", metavar="FILE", help="YAML config file; flags override it")
    p.add_argument("--threads", type=int, metavar="N",
                   help="inference threads, onnxruntime or LiteRT (default: all cores)")
    p.add_argument("--lanes", type=int, metavar="N",
                   help="sessions working on successive frames side by side, the threads split between them "
                        "(default: 2 for files/folders/unthrottled synthetic, 1 for live sources)")
    p.add_argument("--batch", type=int, metavar="N",
                   help="frames per inference for files, folders and unthrottled synthetic (default: "
                        f"{config_mod.AUTO_BATCH} when the model takes a batch, else 1); live and --realtime "
                        "sources: 1")
    p.add_argument("--top-k", type=int, metavar="K", help="labels per prediction (default 5)")
    p.add_argument("--max-frames", type=int, metavar="N",
                   help="stop after N processed frames (N frames in a row refused for NaN/inf: exit 2)")
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
    p.add_argument("--region", action="append", metavar="NAME=X,Y,W,H",
                   help="watch a region (repeatable): x, y, width, height as fractions of the frame, classified "
                        "with the top-level model; replaces the config's regions: list")
    p.add_argument("--classify-motion", action=argparse.BooleanOptionalAction, default=None,
                   help="the gate: classify the frame (and every region without its own classify:) only when "
                        "its picture changed, or at --classify-interval")
    p.add_argument("--classify-interval", type=float, metavar="S",
                   help="with the gate on, classify at least every S seconds (0: only on change)")
    p.add_argument("--validate-config", action="store_true",
                   help="check the config, model and source string, print the result, exit")
    p.add_argument("--version", action="version", version=f"edge_runtime {__version__}")
    return p


def setup_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps; elsewhere we do.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") \
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)
    sanitise_logging()      # no password, no forged line (newlines from a model's metadata) in any message


def overrides_from(args: argparse.Namespace) -> dict:
    overrides = {key: getattr(args, dest) for dest, (key, _flag) in FLAG_KEYS.items()
                 if getattr(args, dest, None) is not None}
    if getattr(args, "region", None):
        overrides["regions"] = region_flags(args.region)
    return overrides


def region_flags(texts: list[str]) -> list[dict]:
    """`--region` values as config entries; ConfigError (command line, --region) for a bad or repeated one."""
    from edge_runtime.util.errors import ConfigError
    from edge_runtime.watch.regions import parse_region_flag

    regions = [parse_region_flag(text) for text in texts]
    names = [r.name for r in regions]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"duplicate region name {name!r}", file="command line", key="--region")
    return [{"name": r.name, "box": list(r.box)} for r in regions]


STOP = threading.Event()   # set by SIGTERM/SIGINT, from the first moment main() runs
RELOAD = threading.Event()  # set by SIGHUP
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
    # SIGHUP (systemctl reload): read the config and the model again (reload.py); asked for before the
    # daemon runs, it happens as soon as it does.
    signal.signal(signal.SIGHUP, lambda *_: RELOAD.set())


def run_daemon(args: argparse.Namespace) -> int:
    from edge_runtime.core.plan import check_threshold_labels, load_model, load_region_models, plan_run, source_uri

    from edge_runtime.daemon.reload import Reloader

    started = time.perf_counter()
    flag_names = {key: flag for key, flag in FLAG_KEYS.values()}

    def load_config():
        from edge_runtime.teach import taught

        # The Teach page's taught models over the config's (the file is never rewritten): at start and reload.
        return taught.apply(config_mod.load(args.config, overrides_from(args), flag_names))

    cfg = load_config()
    setup_logging(cfg.log.level)
    plan = plan_run(cfg, source_uri(cfg))
    with preparing("loading the model"):
        plan, engine = load_model(plan, cfg, args.config)
    with preparing("loading the regions' models"):
        plan, region_engines = load_region_models(plan, cfg, engine)
    check_threshold_labels(cfg, region_engines, strict=args.validate_config, config_file=args.config)
    if args.validate_config:
        regions = f"; {len(cfg.regions)} region(s)" if cfg.regions else ""
        print(f"config OK: source {plan.display_uri}; model {one_line(engine.describe(), 1000)}{regions}")
        return EXIT_OK
    from edge_runtime.daemon.assemble import assemble

    reloaders: list = []        # the Teach page's deploys reload through the reloader made below

    def reload_now():
        return reloaders[0].reload_now() if reloaders else "the daemon is still starting"

    pipeline, sinks = assemble(cfg, plan, engine, region_engines, stop=STOP, reload=reload_now)
    del engine, region_engines      # the lanes hold them: a reload must be able to let them go
    reloader = Reloader(load_config, cfg, plan, pipeline, sinks, pipeline.stats, pipeline.notifier,
                        apply_log_level=setup_logging)
    reloaders.append(reloader)
    reloader.requested = RELOAD
    reloader.start()
    log.info("source: %s (%s); ready in %.2f s", plan.display_uri, "live" if plan.live else "frame by frame",
             time.perf_counter() - started)
    pipeline.run()
    pipeline.finish()
    if pipeline.refusals.gave_up:       # --max-frames frames in a row refused: the model is wrong (refusals.py)
        log.error("%s", pipeline.refusals.gave_up)
        return EXIT_USAGE
    if pipeline.output_closed:
        _silence_stdout()
    elif next(s for s in sinks if s.name == "stdout").stuck:
        # The reader stopped reading: a blocked write would hang the interpreter's exit flush.
        log.warning("stdout reader is not reading; exiting without waiting for it")
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


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
    if argv and argv[0] in COMMANDS:
        # Imported only when asked for: the daemon's own start never pays for a command's imports.
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return module.main(argv[1:])
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
