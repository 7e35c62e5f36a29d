"""Model output -> top-k [(index, label, score)]: softmax for logits, scaling for integer outputs."""

from __future__ import annotations

import logging

import numpy as np

from .model_spec import ModelSpec
from .ratelimit import RateLimited
from .redact import printable

log = logging.getLogger(__name__)
_refusals = RateLimited(60.0)


class NonFiniteOutput(ValueError):
    """The model's scores for a frame hold NaN or infinity: the frame is refused, never published."""


def refuse(stats, index: int, exc: Exception) -> None:
    """Count a frame whose result cannot be published (frames_skipped); warn at most once a minute."""
    stats.add("frames_skipped")
    _refusals.warn(log, "frame %d refused: %s (%d skipped so far; check the model and its sidecar's "
                   "mean/std/output_scale)", index, exc, stats.frames_skipped)


class Postprocessor:
    def __init__(self, spec: ModelSpec, top_k: int = 5):
        self.spec = spec
        self.top_k = top_k

    def scores(self, output: np.ndarray) -> np.ndarray:
        out = output.reshape(-1)
        if np.issubdtype(out.dtype, np.integer):
            # A quantised softmax (TFLite convention: uint8, scale 1/256, zero point 0).
            scale = self.spec.output_scale or (1.0 / 256.0 if out.dtype == np.uint8 else 1.0)
            out = out.astype(np.float32) * np.float32(scale)
        elif self.spec.output_scale:
            out = out * np.float32(self.spec.output_scale)
        if self.spec.output == "logits":
            out = out.astype(np.float32, copy=False)
            e = np.exp(out - out.max())
            out = e / e.sum()
        return out

    def top(self, output: np.ndarray) -> list[dict]:
        scores = self.scores(output)
        # Cheap (µs for 1000 classes) and catches NaN/inf from the model itself, from a sidecar's
        # scale or normalisation, and from softmax of infinite logits. JSON has no NaN.
        if not np.isfinite(scores).all():
            raise NonFiniteOutput("the model's output holds NaN or infinity")
        k = min(self.top_k, scores.size)
        idx = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [{"index": int(i), "label": printable(self.spec.label(int(i))), "score": round(float(scores[i]), 5)}
                for i in idx]
