"""Model output -> top-k [(index, label, score)]: softmax for logits, scaling for integer outputs."""

from __future__ import annotations

import logging

import numpy as np

from edge_runtime.engines.spec import ModelSpec
from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.util.redact import printable

log = logging.getLogger(__name__)
_refusals = RateLimited(60.0)


class NonFiniteOutput(ValueError):
    """The model's scores for a frame hold NaN or infinity: the frame is refused, never published."""


def refuse(stats, index: int, exc: Exception) -> None:
    """Count a frame whose result cannot be published (frames_skipped); warn at most once a minute."""
    stats.add("frames_skipped")
    _refusals.warn(log, "frame %d refused: %s (%d skipped so far; check the model and its sidecar's "
                   "mean/std/output_scale)", index, exc, stats.frames_skipped)


def region_refused(index: int, exc: Exception) -> None:
    """Some regions of a frame refused (NaN/inf rows), the others published: warn at most once a minute."""
    _refusals.warn(log, "frame %d: %s; those regions are left out of this frame, the others published", index, exc)


class Postprocessor:
    def __init__(self, spec: ModelSpec, top_k: int = 5):
        self.spec = spec
        self.top_k = top_k
        self._labels: dict[int, str] = {}     # index -> printable label, filled as met (top_block)

    def scores(self, output: np.ndarray) -> np.ndarray:
        """One output's class scores: scaled to probabilities, softmax for logits (scores_block's rule)."""
        return self.scores_block(np.asarray(output).reshape(1, -1))[0]

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

    def scores_block(self, outputs: np.ndarray) -> np.ndarray:
        """`scores` for each row of an (N, ...) block at once: one scale and one softmax for the block."""
        out = np.asarray(outputs).reshape(len(outputs), -1)
        if np.issubdtype(out.dtype, np.integer):
            scale = self.spec.output_scale or (1.0 / 256.0 if out.dtype == np.uint8 else 1.0)
            out = out.astype(np.float32) * np.float32(scale)
        elif self.spec.output_scale:
            out = out * np.float32(self.spec.output_scale)
        if self.spec.output == "logits":
            out = out.astype(np.float32, copy=False)
            with np.errstate(invalid="ignore", over="ignore"):   # a NaN/inf row is refused below, alone
                e = np.exp(out - out.max(axis=1, keepdims=True))
                out = e / e.sum(axis=1, keepdims=True)
        return out

    def top_block(self, outputs: np.ndarray) -> list[list[dict] | None]:
        """`top` for each row of an (N, ...) block (a group's regions), vectorised: one argpartition for
        all rows instead of a Python loop of N. A row holding NaN/inf gives None (refused alone: the
        other rows stand). Same results as `top` row by row (tests/test_regions_fast.py)."""
        if len(outputs) == 0:
            return []
        scores = self.scores_block(outputs)
        n, size = scores.shape
        # A row's float64 sum is finite exactly when all its scores are (1000s of float32 scores cannot
        # overflow it): one call instead of isfinite + all.
        finite = np.isfinite(scores.sum(axis=1, dtype=np.float64))
        k = min(self.top_k, size)
        rows = np.arange(n)[:, None]
        if k < size:
            idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(size), (n, size))
        # Plain fancy indexing, not take_along_axis: fewer numpy calls, which right after a session.run
        # cost ~25 µs each with cold caches (0.42 -> 0.32 ms a frame at N = 8, measured).
        picked = scores[rows, idx]
        order = np.argsort(-picked, axis=1, kind="stable")
        vals = picked[rows, order].tolist()
        idx = idx[rows, order].tolist()
        label = self._label
        return [[{"index": i, "label": label(i), "score": round(v, 5)} for i, v in zip(ri, rv, strict=True)]
                if ok else None for ri, rv, ok in zip(idx, vals, finite.tolist(), strict=True)]

    def _label(self, index: int) -> str:
        try:
            return self._labels[index]
        except KeyError:
            text = self._labels[index] = printable(self.spec.label(index))
            return text
