"""Is the daemon healthy? One pure function of what the pipeline knows, for /healthz and /metrics."""

from __future__ import annotations

from dataclasses import dataclass

from edge_runtime.util.errors import first_line


@dataclass(frozen=True)
class Observed:
    """What the pipeline knows at one moment (perf_counter seconds)."""
    now: float
    started: float                      # when the pipeline was built
    last_processed: float | None        # when the last frame was published
    lost_since: float | None            # when the live source was lost, if it is
    lost_reason: str
    source_connected: bool
    frames_processed: int
    error: BaseException | None         # the pipeline stopped with this
    stopped: bool


def assess(o: Observed, unhealthy_after: float = 30.0) -> dict:
    """Healthy while frames flow; the reason when the source is lost or frames stopped for longer than
    `unhealthy_after` seconds, or the pipeline stopped (error or shutdown)."""
    age = None if o.last_processed is None else o.now - o.last_processed
    lost_for = None if o.lost_since is None else o.now - o.lost_since
    status, reason = "ok", None
    if o.error is not None:
        status, reason = "error", f"the pipeline stopped with an error: {type(o.error).__name__}: {first_line(o.error)}"
    elif o.stopped:
        status, reason = "stopped", "the pipeline has stopped"
    else:
        waited = o.now - o.started
        stale = (age is None and waited > unhealthy_after) or (age is not None and age > unhealthy_after)
        if lost_for is not None and (lost_for > unhealthy_after or stale):
            status, reason = "source_lost", f"source lost for {lost_for:.1f} s: {o.lost_reason}"
        elif stale and age is None:
            status, reason = "no_frames", f"no frame processed in the {waited:.0f} s since start"
        elif stale:
            status, reason = "stalled", f"no frame processed for {age:.0f} s"
        elif age is None:
            status = "starting"
    return {"healthy": reason is None, "status": status, "reason": reason,
            "source_connected": o.source_connected,
            "last_frame_age_s": None if age is None else round(age, 3),
            "source_lost_for_s": None if lost_for is None else round(lost_for, 3),
            "frames_processed": o.frames_processed}
