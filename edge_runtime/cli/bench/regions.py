"""bench --regions: N regions against the bare batch-N cost, in one run."""

from __future__ import annotations

from pathlib import Path


from edge_runtime.cli.bench.measure import _best, bare_lanes, bare_session, daemon_plan, daemon_run


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
