"""The daemon assembled: the lanes' sessions warmed, the regions' groups, states and snapshots (watch.py),
the sinks started with what they may know (SinkContext), the pipeline. cli.py calls assemble() once the
config is loaded and the run plan and model are settled."""

from __future__ import annotations

import logging

log = logging.getLogger("edge_runtime")


def warn_untrained(engine) -> None:
    if engine.spec.untrained:
        bar = "!" * 78
        for line in (bar, f"MODEL HAS UNTRAINED (RANDOM) WEIGHTS: {engine.path}",
                     "Its predictions are meaningless. It proves the pipeline runs, nothing more.",
                     "Get real ImageNet weights: python -m edge_runtime fetch-model (no PyTorch needed), or "
                     "your own: models/README.md.",
                     bar):
            log.warning(line)


def assemble(cfg, plan, engine, region_engines=None, *, stop, reload=None):
    """Warm the lanes' sessions, start the sinks, assemble the pipeline. Returns it and the sinks."""
    import cv2

    from edge_runtime.util.notify import Notifier
    from edge_runtime.core.pipeline import Pipeline, PipelineOptions
    from edge_runtime.sinks import SinkContext, build_sinks
    from edge_runtime.watch.snapshots import SnapshotWriter
    from edge_runtime.core.stats import Stats
    from edge_runtime.watch.gate import resolve
    from edge_runtime.watch.watcher import Watch

    # Capture and preprocessing already run beside inference; OpenCV's own worker pool would only
    # fight onnxruntime's threads for the same cores (measured: slower, not faster).
    cv2.setNumThreads(1)
    log.info("model: %s", engine.describe())
    warn_untrained(engine)
    from edge_runtime.util.errors import preparing
    with preparing("preparing the lanes' sessions"):
        engines, groups = lane_sessions(cfg, plan, engine, region_engines or {})
    if plan.lanes > 1 or plan.batch > 1:
        shared = ", one shared session" if plan.lanes > 1 and len(set(engines)) == 1 else ""
        log.info("%d lanes of %d thread(s)%s, %d frame(s) per inference: frames classified side by side, "
                 "published in order", plan.lanes, engines[0].threads, shared, plan.batch)
    gated = [r.name for r in cfg.regions if resolve(cfg.classify, r.classify).active] if cfg.regions \
        else ["the whole frame"] if cfg.classify.active else []
    if gated:
        log.info("classify gate on for %s: classified only when the picture changes%s", ", ".join(gated),
                 " or at the interval" if cfg.classify.interval else "")
    if cfg.regions:
        log.info("%d region(s): %s", len(cfg.regions), ", ".join(f"{r.name} {list(r.box)}" for r in cfg.regions))
    stats = Stats()
    show_model(stats, engine)
    show_region_models(stats, cfg.regions, cfg.model, region_engines or {})
    sinks = build_sinks(cfg)
    options = PipelineOptions(top_k=cfg.top_k, max_frames=cfg.max_frames, stats_interval=cfg.stats_interval,
                              batch=plan.batch, stall_timeout=cfg.capture.stall_timeout,
                              reconnect_initial=cfg.capture.reconnect_initial_delay,
                              reconnect_max=cfg.capture.reconnect_max_delay, paced=plan.paced)
    # States, events and snapshots of the regions (or of the whole frame).
    watch = Watch(cfg.regions, cfg.publish, sinks, SnapshotWriter.from_config(cfg.snapshots, stats=stats), stats,
                  classify=cfg.classify)
    pipeline = Pipeline(plan.make_source, engines, sinks, options, live=plan.live, source_uri=plan.display_uri,
                        stop=stop, notifier=Notifier(), stats=stats, watch=watch, region_groups=groups)
    context = SinkContext(stats=stats, stop=stop, live=plan.live, model_info=engine.info(),
                          health=pipeline.health, regions=cfg.regions,
                          snapshot_reader=watch.writer.read if watch.writer else None, reload=reload)
    for sink in sinks:
        sink.start(context)
    watch.start()
    return pipeline, sinks


def lane_sessions(cfg, plan, engine, region_engines: dict):
    """Each lane's session and, with regions, its region groups (None without), every session warmed
    once, at the batch it will run: at start and on reload alike."""
    from edge_runtime.engines.lanes import lane_engines
    from edge_runtime.watch.watcher import lane_groups

    engines = lane_engines(engine, plan.lanes)
    for session in dict.fromkeys(engines):
        session.warm_up(batch=plan.batch)
    if not cfg.regions:
        return engines, None
    groups = lane_groups(cfg.regions, cfg.model, region_engines, plan.lanes, cfg.top_k)
    for group in {id(g.engine): g for lane in groups for g in lane}.values():     # each session once
        group.engine.warm_up(batch=len(group.tensor))
    return engines, groups


def show_model(stats, engine) -> None:
    """In every stats line: which model, and whether its labels mean anything (at start and on reload).
    `arch` only when the model says (a foreign model has none: nothing rather than an empty string);
    `engine`: which runtime runs it (onnxruntime, litert)."""
    info = engine.info()
    model = {"path": info["path"], "engine": engine.kind, "untrained": engine.spec.untrained}
    if info["arch"]:
        model["arch"] = info["arch"]
    stats.set_extra("model", model)


def show_region_models(stats, regions, default_model: str, region_engines: dict) -> None:
    """With regions: the model file each region runs, in one log line, in the stats line (`region_models`)
    and in /metrics (edge_runtime_region_model_info); at start and on every reload."""
    if not regions:
        return
    models = {r.name: str(region_engines[r.model or default_model].path) for r in regions}
    stats.set_extra("region_models", models)
    log.info("region models: %s", ", ".join(f"{name}: {path}" for name, path in models.items()))
