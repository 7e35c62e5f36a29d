"""The vectorised top-k of a region group (Postprocessor.top_block) against the obvious per-row `top`:
same indices, labels and scores for every row, and a NaN/inf row refused alone."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.model_spec import InputSpec, ModelSpec
from edge_runtime.postprocess import NonFiniteOutput, Postprocessor


def spec(output: str, scale: float | None = None, classes: int = 1000, offset: int = 0) -> ModelSpec:
    labels = tuple(f"label {i} é" for i in range(classes - 3))     # a few indices past the labels: class_N
    return ModelSpec(input=InputSpec(size=(8, 8)), labels=labels, label_offset=offset, output=output,
                     output_scale=scale, origin="test")


def slow(post: Postprocessor, block: np.ndarray) -> list:
    out = []
    for row in block:
        try:
            out.append(post.top(row))
        except NonFiniteOutput:
            out.append(None)
    return out


CASES = [("logits", None, np.float32), ("probabilities", None, np.float32), ("probabilities", 0.5, np.float32),
         ("probabilities", None, np.uint8), ("probabilities", 1 / 255, np.uint8), ("logits", 0.1, np.int8)]


@pytest.mark.parametrize("output,scale,dtype", CASES)
@pytest.mark.parametrize("top_k", [1, 5, 1000, 2000])
def test_block_equals_rows(output, scale, dtype, top_k):
    rng = np.random.default_rng(top_k)
    post = Postprocessor(spec(output, scale, offset=1), top_k)
    for n in (1, 2, 8):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            block = rng.integers(info.min, info.max, (n, 1, 1000), endpoint=True).astype(dtype)
        else:
            block = (rng.standard_normal((n, 1000)) * 4).astype(dtype)
        block[0, :20] = block[0, 0]                   # ties at the top: order must match too
        assert post.top_block(block) == slow(post, block)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_row_is_refused_alone(bad):
    rng = np.random.default_rng(1)
    for output in ("logits", "probabilities"):
        post = Postprocessor(spec(output), 5)
        block = rng.standard_normal((4, 1000)).astype(np.float32)
        block[2, 7] = bad
        got = post.top_block(block)
        expected = slow(post, block)
        if output == "logits" and bad == -np.inf:      # exp(-inf) = 0: a valid score, not refused
            assert None not in got
        else:
            assert got[2] is None and expected[2] is None
        assert got == expected
        assert all(len(t) == 5 for i, t in enumerate(got) if i != 2)


def test_empty_block():
    assert Postprocessor(spec("logits"), 5).top_block(np.empty((0, 1000), np.float32)) == []
