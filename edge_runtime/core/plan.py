"""The run plan: every decision about how to run, made once, from the config, the source and the model.

Threads, lanes, frames per inference, one shared session or one per lane, onnxruntime's memory
pattern and spin-waiting all follow from three facts: how many threads the user gives, whether the
source is live (a camera: newest frame, lowest latency) or a throughput source (a file, a folder,
unthrottled synthetic), and whether the model takes a batch. The daemon (cli.py) and `bench` both
plan here, so what bench measures is what the daemon runs.

In two steps, because the model's batch axis is only known once it is loaded, and the session must be
made with its final options from the start (one made and thrown away left ~15 MB behind):
`plan_run(cfg, uri)` before the model, `load_model(plan, cfg)` to load it and complete the plan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.config import AUTO_BATCH
from edge_runtime.engines import Engine, load_engine
from edge_runtime.util.errors import ModelError, UserError
from edge_runtime.util.redact import display_uri
from edge_runtime.sources import Source, SourceOptions, camera_uri, open_source

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunPlan:
    uri: str
    live: bool                  # newest frame wins, drops counted, glitches retried
    paced: bool                 # live or --realtime: frames come at the source's pace
    threads: int                # onnxruntime threads in all
    lanes: int                  # sessions classifying successive frames side by side
    per_lane: int               # threads of each lane's session
    batch: int                  # frames per session.run (intended, until load_model() knows the model)
    mem_pattern: bool
    spinning: bool              # onnxruntime workers spin between runs (throughput) or sleep (paced)
    source_options: SourceOptions
    source_problem: UserError | None = None   # a bad source string, reported after the model's own checks

    @property
    def display_uri(self) -> str:
        """The source as shown anywhere (logs, records, MQTT, HTTP): credentials masked, valid UTF-8."""
        return display_uri(self.uri)

    def make_source(self) -> Source:
        """The source, made (not opened); the pipeline makes it again to reconnect."""
        return open_source(self.uri, self.source_options)


def source_uri(cfg) -> str:
    if cfg.camera is not None:
        return camera_uri(cfg.camera)
    if cfg.source is not None:
        return cfg.source
    raise UserError("no source: give --source URI or --camera N (or `source:` in the config file); "
                    "try --source synthetic://640x480 to see it work without a camera")


def plan_run(cfg, uri: str) -> RunPlan:
    """What can be decided before the model is loaded."""
    options = SourceOptions(loop=cfg.loop, realtime=cfg.realtime, width=cfg.capture.width,
                            height=cfg.capture.height, fps=cfg.capture.fps, timeout_s=cfg.capture.timeout,
                            max_image_pixels=cfg.capture.max_image_pixels)
    problem = None
    try:
        live = open_source(uri, options).live        # made, not opened: no I/O
    except UserError as exc:
        live, problem = True, exc
    threads = cfg.threads or os.cpu_count() or 1
    lanes = lane_count(cfg.lanes, live, threads)
    paced = live or cfg.realtime
    per_lane = max(1, threads // lanes)
    batch = batch_size(cfg.batch, paced)
    # One-thread lanes share one session: onnxruntime's Run is thread-safe and, with one thread, runs
    # in its caller's thread, so the lanes share the weights and the arena instead of a copy each.
    # Several threads a lane: a session each, with its own thread pool. onnxruntime's memory pattern
    # (one planned block per input shape) kept the shared session fastest, but cost separate batched
    # sessions 15 MB each for nothing (measured, docs/BENCHMARKS.md). A paced source (a camera)
    # leaves time between frames: worker threads then sleep instead of spin-waiting through it.
    return RunPlan(uri=uri, live=live, paced=paced, threads=threads, lanes=lanes, per_lane=per_lane,
                   batch=batch, mem_pattern=per_lane == 1 or batch == 1, spinning=not paced,
                   source_options=options, source_problem=problem)


def load_model(plan: RunPlan, cfg, config_file: str | None = None) -> tuple[RunPlan, Engine]:
    """Load and check the model with the plan's session options; the plan completed with the model's
    batch axis and input size. A bad source string is raised here, after the model's own checks."""
    check_model_path(cfg.model)
    engine = load_engine(cfg.model, plan.per_lane, cfg, config_spec=cfg.model_spec, spec_origin=config_file,
                         mem_pattern=plan.mem_pattern, spinning=plan.spinning)
    spec = engine.spec.input
    plan = dataclasses.replace(plan, batch=batch_size(cfg.batch, plan.paced, engine),
                               source_options=dataclasses.replace(plan.source_options, model_size=tuple(spec.size),
                                                                  model_resize=spec.resize))
    if plan.source_problem is not None:
        raise plan.source_problem
    return plan, engine


def check_model_path(model: str) -> None:
    """A missing model: say where it was looked for (relative paths are to the working directory)."""
    if os.path.exists(model):
        return
    where = str(Path(model).absolute())
    relative = "" if Path(model).is_absolute() else f" (relative to the current directory {os.getcwd()})"
    raise ModelError(model, f"file not found: looked for {where}{relative}. Get a real MobileNetV3-Small with "
                     f"`python -m edge_runtime fetch-model --output {model}` (--untrained offline: a demo whose "
                     "labels mean nothing; models/export.py makes one with PyTorch), or point --model at your "
                     ".onnx (or .tflite) file")


def lane_count(configured: int, live: bool, threads: int) -> int:
    """Lanes to run. Auto (0): a file, folder or unthrottled synthetic source is about throughput, so
    two single-thread lanes overlap one frame's Python work with the other's inference (measured,
    docs/BENCHMARKS.md); a live source is about latency on the newest frame: one lane, all threads."""
    if configured:
        return configured
    return 1 if live or threads < 2 else 2


def batch_size(configured: int, paced: bool, engine: Engine | None = None) -> int:
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


def load_region_models(plan: RunPlan, cfg, engine: Engine) -> tuple[RunPlan, dict[str, Engine]]:
    """With `regions:`: the engine of every model a region uses (the frame model's own engine for regions
    without one), loaded with the plan's session options; the plan then runs one frame per step, since
    the regions of one frame are the batch. Without regions: the plan unchanged, no engines."""
    if not cfg.regions:
        return plan, {}
    if cfg.batch > 1:
        log.info("batch %d applies to whole frames; with regions, the regions of one frame are the batch", cfg.batch)
    engines: dict[str, Engine] = {cfg.model: engine}
    for region in cfg.regions:
        model = region.model or cfg.model
        if model not in engines:
            check_model_path(model)
            engines[model] = load_engine(model, plan.per_lane, cfg, mem_pattern=plan.mem_pattern,
                                         spinning=plan.spinning)
    return dataclasses.replace(plan, batch=1), engines


def check_threshold_labels(cfg, region_engines: dict[str, Engine], *, strict: bool,
                           config_file: str | None) -> None:
    """A region's `thresholds:` label that its model does not have never applies: a warning naming it (at
    start and on reload), an error (exit 2) under --validate-config (`strict`), which exists to catch it."""
    from edge_runtime.util.errors import ConfigError
    from edge_runtime.util.redact import printable
    from edge_runtime.watch.regions import unknown_threshold_labels

    def labels_of(model: str) -> set[str]:
        engine = region_engines[model]
        return {printable(engine.spec.label(i)) for i in range(engine.num_outputs)}

    for key, message in unknown_threshold_labels(cfg.regions, cfg.model, labels_of):
        if strict:
            raise ConfigError(message, file=config_file, key=key)
        log.warning("%s: %s", key, message)
