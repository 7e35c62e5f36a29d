"""Model loading: good models run, broken ones are refused naming the file and the problem (exit 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import run_daemon
from edge_runtime.engines.ort import Engine
from edge_runtime.util.errors import ModelError
from tiny_model import make_channel_model, make_random_model, strip_metadata


def _identity_model(path, input_type, shape):
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", input_type, shape)],
                              [helper.make_tensor_value_info("y", input_type, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def broken_models(tmp_path):
    good = make_random_model(tmp_path / "good.onnx", size=(64, 64), classes=10)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is a text file, not a model\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    rank2 = _identity_model(tmp_path / "rank2.onnx", TensorProto.FLOAT, [1, 10])
    text = _identity_model(tmp_path / "text.onnx", TensorProto.STRING, [1, 3, 64, 64])
    return {
        "missing": (tmp_path / "nope.onnx", "file not found"),
        "truncated": (truncated, "onnxruntime cannot load it"),
        "not onnx": (not_onnx, "onnxruntime cannot load it"),
        "empty": (empty, "empty"),
        "wrong rank": (rank2, "rank 2"),
        "text input": (text, "tensor(string)"),
    }


def test_good_model_loads_and_runs(tmp_path):
    path = make_random_model(tmp_path / "m.onnx", size=(64, 64), classes=10)
    engine = Engine(str(path), threads=1)
    engine.warm_up()
    assert engine.num_outputs == 10
    assert engine.spec.untrained and "metadata" in engine.spec.origin
    out = engine.run(np.zeros(engine.input_shape(), np.float32))
    assert out.shape == (10,)


@pytest.mark.parametrize("case", ["missing", "truncated", "not onnx", "empty", "wrong rank", "text input"])
def test_broken_model_is_refused_with_exit_2(case, tmp_path):
    path, problem = broken_models(tmp_path)[case]
    with pytest.raises(ModelError) as err:
        Engine(str(path), threads=1)
    assert str(path) in str(err.value) and problem in str(err.value)
    result = run_daemon("--source", "synthetic://64x64", "--model", path, "--max-frames", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    # The daemon picks the engine by the file's content: a file that is no model at all is refused there.
    problem = {"not onnx": "is not an ONNX model"}.get(case, problem)
    assert len(errors) == 1 and str(path) in errors[0] and problem in errors[0]
    assert result.stdout == ""


def test_labels_that_disagree_with_the_output_size(tmp_path):
    path = make_random_model(tmp_path / "m.onnx", size=(64, 64), classes=10, embed=False)
    (tmp_path / "labels.txt").write_text("\n".join(f"l{i}" for i in range(12)))
    (tmp_path / "m.yaml").write_text("input: {size: [64, 64]}\nlabels: labels.txt\n")
    with pytest.raises(ModelError, match="10 outputs but the labels .* give 12 classes"):
        Engine(str(path), threads=1)


def test_input_size_that_disagrees_with_the_description(tmp_path):
    path = make_random_model(tmp_path / "m.onnx", size=(64, 64), classes=10, embed=False)
    (tmp_path / "m.yaml").write_text("input: {size: [224, 224]}\n")
    with pytest.raises(ModelError, match=r"shape \['N', 3, 64, 64\] but the description .* size \[224, 224\]"):
        Engine(str(path), threads=1)


def test_dtype_that_disagrees_with_the_description(tmp_path):
    path = make_channel_model(tmp_path / "m.onnx", dtype="uint8", layout="nhwc", embed=False)
    (tmp_path / "m.yaml").write_text("input: {size: [32, 32], layout: nhwc, dtype: float32}\n")
    with pytest.raises(ModelError, match="is uint8 but the description .* says dtype float32"):
        Engine(str(path), threads=1)


def test_bad_sidecar_names_the_file_and_key(tmp_path):
    path = make_random_model(tmp_path / "m.onnx", size=(64, 64), classes=10, embed=False)
    (tmp_path / "m.yaml").write_text("input: {size: [64, 64], colour: rgb}\n")
    with pytest.raises(ModelError) as err:
        Engine(str(path), threads=1)
    assert "m.yaml" in str(err.value) and "input.colour" in str(err.value)


def test_description_order_metadata_then_sidecar_then_config(tmp_path):
    embedded = make_channel_model(tmp_path / "a.onnx")
    (tmp_path / "a.yaml").write_text("input: {size: [32, 32], color: bgr}\n")   # ignored: metadata wins
    assert Engine(str(embedded), 1).spec.input.color == "rgb"
    bare = make_channel_model(tmp_path / "b.onnx", embed=False)
    assert Engine(str(bare), 1, config_spec={"input": {"size": [32, 32], "color": "bgr"}}).spec.input.color == "bgr"
    (tmp_path / "b.yaml").write_text("input: {size: [32, 32], resize: 40}\n")
    spec = Engine(str(bare), 1, config_spec={"input": {"size": [32, 32], "color": "bgr"}}).spec
    assert spec.input.color == "rgb" and spec.input.resize == 40 and spec.origin.endswith("b.yaml")
    strip_metadata(embedded)
    assert Engine(str(embedded), 1).spec.input.color == "bgr"


def test_onnxruntime_knobs_from_the_environment(monkeypatch, tiny_model):
    from edge_runtime.engines.ort import session_options
    monkeypatch.delenv("EDGE_ORT_SPINNING", raising=False)
    monkeypatch.delenv("EDGE_ORT_KLEIDIAI", raising=False)
    plain = session_options(2)
    assert plain.intra_op_num_threads == 2
    assert plain.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    # Exact INT8 kernels on x86 CPUs without VNNI (what it changes: tests/models/test_model_quantize.py).
    assert plain.get_session_config_entry("session.x64quantprecision") == "1"
    assert session_options(2, spinning=False).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(Exception, match="mlas.disable_kleidiai"):
        plain.get_session_config_entry("mlas.disable_kleidiai")      # not set unless asked
    monkeypatch.setenv("EDGE_ORT_SPINNING", "1")                     # the environment wins, either way
    assert session_options(2, spinning=False).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert Engine(str(tiny_model), 2, spinning=False).spinning
    monkeypatch.setenv("EDGE_ORT_SPINNING", "0")
    monkeypatch.setenv("EDGE_ORT_KLEIDIAI", "0")
    tuned = session_options(1)
    assert tuned.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert tuned.get_session_config_entry("mlas.disable_kleidiai") == "1"
    engine = Engine(str(tiny_model), 1)        # a real session accepts both
    engine.warm_up(1)
    assert engine.run(np.zeros(engine.input_shape(), np.float32)).shape == (1000,)


def test_a_sibling_session_is_not_checked_and_probed_again(tiny_model, monkeypatch):
    """A lane's sibling session: same model, description and class count, its own threads; the checks
    and the blank-image run its parent just did are not repeated (one inference less per lane at start
    and on every reload)."""
    parent = Engine(str(tiny_model), 1)
    monkeypatch.setattr(Engine, "_check", lambda self: pytest.fail("checked again"))
    sibling = parent.sibling(2)
    assert sibling.session is not parent.session and sibling.threads == 2
    assert sibling.num_outputs == parent.num_outputs and sibling.spec is parent.spec
    blank = np.zeros((1,) + parent.input_shape()[1:], parent.input_dtype())
    np.testing.assert_allclose(sibling.run_batch(blank), parent.run_batch(blank), rtol=1e-5, atol=1e-6)
