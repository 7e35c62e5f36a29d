"""Model output -> top-k [(index, label, score)]: softmax for logits, scaling for integer outputs."""

from __future__ import annotations

import numpy as np

from .model_spec import ModelSpec


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
        k = min(self.top_k, scores.size)
        idx = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [{"index": int(i), "label": self.spec.label(int(i)), "score": round(float(scores[i]), 5)}
                for i in idx]
