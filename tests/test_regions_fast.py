"""The vectorised top-k of a region group (Postprocessor.top_block) against the obvious per-row `top`:
same indices, labels and scores for every row, and a NaN/inf row refused alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edge_runtime.engines.spec import InputSpec, ModelSpec
from edge_runtime.engines.postprocess import NonFiniteOutput, Postprocessor


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


@pytest.mark.parametrize("output,scale,dtype", CASES)
def test_scores_against_the_obvious_formula(output, scale, dtype):
    """The one scoring rule (scores_block, which scores() uses too) against a slow float64 reference."""
    rng = np.random.default_rng(3)
    post = Postprocessor(spec(output, scale), 5)
    for row in (rng.integers(0, 255, 1000) if np.issubdtype(dtype, np.integer) else rng.standard_normal(1000) * 4,):
        row = row.astype(dtype)
        x = row.astype(np.float64)
        if np.issubdtype(dtype, np.integer):
            x = x * (scale or (1 / 256 if dtype == np.uint8 else 1.0))
        elif scale:
            x = x * scale
        if output == "logits":
            x = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        assert np.allclose(post.scores(row), x, rtol=1e-5, atol=1e-7)
        assert np.allclose(post.scores_block(np.stack([row, row]))[1], x, rtol=1e-5, atol=1e-7)


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


def test_daemon_publishes_the_finite_region_when_another_is_refused(tmp_path):
    """A model whose scores are NaN for a red crop only (finite on a black image, so it passes the start-up
    check): the red region is left out (one warning), the green region of the same frame is published; a
    frame whose regions are all refused is skipped."""
    import subprocess
    import sys

    import cv2
    import onnx
    from harness import REPO, daemon_env
    from onnx import helper, numpy_helper
    from tiny_model import make_channel_model

    path = make_channel_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    g = model.graph
    next(n for n in g.node if n.output[0] == "logits").output[0] = "pre"
    # logits = pre * sqrt(5 - red): NaN where the crop is red (red logit 10), finite where it has no red.
    g.initializer.extend([numpy_helper.from_array(np.array([[1.0], [0.0], [0.0]], np.float32), "pick_red"),
                          numpy_helper.from_array(np.array([5.0], np.float32), "five")])
    g.node.extend([helper.make_node("MatMul", ["pre", "pick_red"], ["red"]),
                   helper.make_node("Sub", ["five", "red"], ["d"]),
                   helper.make_node("Sqrt", ["d"], ["root"]), helper.make_node("Mul", ["pre", "root"], ["logits"])])
    onnx.save(model, str(path))
    frames = tmp_path / "frames"
    frames.mkdir()
    half = np.zeros((40, 80, 3), np.uint8)
    half[:, :40] = (0, 255, 0)                                  # BGR green on the left
    half[:, 40:] = (0, 0, 255)                                  # BGR red on the right
    cv2.imwrite(str(frames / "0.png"), half)
    cv2.imwrite(str(frames / "1.png"), np.full((40, 80, 3), (0, 0, 255), np.uint8))   # all red: all refused
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "--source", str(frames), "--model", str(path),
                           "--region", "ok=0,0,0.5,1", "--region", "hot=0.5,0,0.5,1", "--stats-interval", "3600"],
                          capture_output=True, text=True, timeout=60, env=daemon_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    preds = [x for x in lines if x["type"] == "prediction"]
    assert [(p["frame"], p["region"], p["top"][0]["label"]) for p in preds] == [(0, "ok", "green")]
    final = lines[-1]
    assert final["type"] == "stats" and final["frames_processed"] == 1 and final["frames_skipped"] == 1
    # Counted per region: the hot region in both frames, the ok one in the all-red frame only.
    assert {name: r["refused"] for name, r in final["regions"].items()} == {"ok": 1, "hot": 2}
    assert final["regions"]["ok"]["frames"] == 1 and final["regions"]["hot"]["frames"] == 0
    # whichever frame a lane finished first is warned about (once a minute): "(regions hot)" or "(regions ok, hot)"
    assert re.search(r"\(regions (ok, )?hot\)", proc.stderr) and "NaN or infinity" in proc.stderr
