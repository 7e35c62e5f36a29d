"""Hostile configs, sidecars, ONNX metadata and models: YAML/JSON bombs, deep nesting, huge numbers,
out-of-range values, models that validation used to accept and that then failed on their first frame.

What the user must see: exit 2 and exactly one short error line (no traceback, no multi-GB "line"),
within a time and memory bound. A property-based part throws generated YAML/JSON at the loaders.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_hostile_files import error_lines, run_measured
from tiny_model import make_random_model

from edge_runtime import config
from edge_runtime.engines import spec as model_spec
from edge_runtime.util.errors import ConfigError, UserError

MAX_LINE = 400


def one_error(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr[-2000:]
    assert len(errors[0]) < MAX_LINE, errors[0][:2000]
    return errors[0]


def alias_bomb(levels: int = 9) -> str:
    """The 333-byte config: nine levels of nine aliases, 387 M strings once expanded."""
    names = "abcdefghi"[:levels]
    items = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&{names[i]} [" + ",".join(["*" + names[i - 1]] * 9) + "]" for i in range(1, levels)]
    return "source: [" + ", ".join(items) + "]\n"


# --- YAML: aliases, depth, size -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    alias_bomb(),
    "base: &b {top_k: 3}\n<<: *b\n",                         # a merge key is an alias too
    "top_k: &n 3\nmax_frames: *n\n",                         # even a harmless one: no config needs them
])
def test_yaml_aliases_are_refused_fast(text, tiny_model, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    t0 = time.monotonic()
    result, peak_mb = run_measured("--config", path, "--model", tiny_model, "--source", "synthetic://64x48",
                                   "--validate-config", timeout=30)
    elapsed = time.monotonic() - t0
    line = one_error(result)
    assert "aliases (*name) are not accepted" in line and "line " in line
    assert elapsed < 10 and peak_mb < 250, (elapsed, peak_mb)   # the bomb: 199 s, 15.5 GB, a 2.1 GB error line


def test_alias_bomb_in_a_sidecar_is_refused(tmp_path):
    model = make_random_model(tmp_path / "m.onnx", size=(32, 32), classes=3, resize=None, embed=False,
                              labels=("a", "b", "c"))
    model.with_suffix(".yaml").write_text(alias_bomb().replace("source", "labels"))
    result, _ = run_measured("--model", model, "--source", "synthetic://64x48", "--validate-config")
    assert "aliases (*name) are not accepted" in one_error(result)


@pytest.mark.parametrize("where,text", [
    ("config", "source: " + "[" * 20000 + "]" * 20000 + "\n"),
    ("config", "capture: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"),
    ("sidecar", "input: " + "[" * 50000 + "\n"),
    ("config", "x:\n  " + "- " * 3000 + "1\n"),
])
def test_deeply_nested_yaml_is_one_line(where, text, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    args = ["--model", tmp_path / "m.onnx", "--source", "synthetic://64x48", "--validate-config"]
    if where == "config":
        args += ["--config", path]
    else:
        model = make_random_model(tmp_path / "m.onnx", size=(32, 32), classes=3, resize=None, embed=False)
        path.rename(model.with_suffix(".yaml"))
    result, _ = run_measured(*args)
    assert "nested deeper than 32 levels" in one_error(result)        # was a RecursionError traceback


def test_oversized_config_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# padding\n" * 200_000)                            # 2 MB
    result, _ = run_measured("--config", path, "--validate-config")
    assert "larger than 1 MB" in one_error(result)


# --- numbers and long values ------------------------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    ("threads: 0x" + "f" * 6000 + "\n", "threads"),                 # repr() of it raised ValueError
    ("top_k: " + "9" * 5000 + "\n", "a value cannot be read"),     # beyond Python's int digit limit
    ("capture:\n  timeout: 1e999\n", "capture.timeout"),            # inf
    ("log:\n  level: '" + "x" * 100_000 + "'\n", "log.level"),       # long value: message stays short
    ('? "' + "k" * 5000 + '\\nforged line"\n: 1\n', "unknown key"),     # long key with a newline
])
def test_weird_values_give_one_short_line(text, expect, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result, _ = run_measured("--config", path, "--validate-config")
    assert expect in one_error(result)


# --- out-of-range values -------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("capture:\n  timeout: 1.0e+9\n", "capture.timeout"),             # OpenCV's int32 milliseconds overflow
    ("capture:\n  stall_timeout: 1.0e+12\n", "capture.stall_timeout"),
    ("capture:\n  reconnect_max_delay: 1.0e+10\n", "capture.reconnect_max_delay"),
    ("capture:\n  width: 100000\n  height: 100000\n", "capture.width"),
    ("capture:\n  fps: 100000\n", "capture.fps"),
    ("threads: 100000\n", "threads"),                                 # allocated threads until it died
    ("lanes: 10000\n", "lanes"),
    ("top_k: 100000\n", "top_k"),
    ("max_frames: 10000000000000000\n", "max_frames"),
    ("stats_interval: 1.0e+12\n", "stats_interval"),
    ("camera: 100000\n", "camera"),
    ("mqtt:\n  keepalive: 70000\n", "mqtt.keepalive"),               # killed paho's network thread
    ("mqtt:\n  max_queued: 100000000\n", "mqtt.max_queued"),
    ("mqtt:\n  reconnect_max_delay: 1.0e+9\n", "mqtt.reconnect_max_delay"),
    ("http:\n  max_connections: 1000000\n", "http.max_connections"),
    ("http:\n  unhealthy_after: 1.0e+12\n", "http.unhealthy_after"),
    ("publish:\n  min_frames: 1000000000\n", "publish.min_frames"),
    ("capture:\n  max_image_pixels: 10000000000\n", "capture.max_image_pixels"),
]


@pytest.mark.parametrize("text,key", OUT_OF_RANGE)
def test_out_of_range_values_are_config_errors(text, key, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert err.value.key == key and "expected a number <=" in str(err.value)


@pytest.mark.parametrize("text,key", [OUT_OF_RANGE[0], OUT_OF_RANGE[5], OUT_OF_RANGE[11]])
def test_validate_config_catches_out_of_range(text, key, tiny_model, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result, _ = run_measured("--config", path, "--model", tiny_model, "--source", "synthetic://64x48",
                             "--validate-config")
    assert f"key '{key}': expected a number <=" in one_error(result)


@pytest.mark.parametrize("doc,key", [
    ({"input": {"size": [100000, 100000]}}, "input.size"),
    ({"input": {"size": [32, 32], "resize": 10**7}}, "input.resize"),
    ({"input": {"size": [32, 32]}, "label_offset": 10**9}, "label_offset"),
    ({"input": {"size": [32, 32]}, "output_scale": 1e300}, "output_scale"),
])
def test_sidecar_out_of_range(doc, key, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        model_spec.load_sidecar(path)
    assert err.value.key == key and "expected a number <=" in str(err.value)


# --- models that validation accepted and the first frame broke -----------------------------------

def gap_model(path: Path, in_shape, out_shape, spec: dict | None = None, outputs: bool = True,
              spec_json: str | None = None, classes: int = 3) -> Path:
    """input -> global average pool -> flatten -> 3 x classes matmul; shapes declared as given.
    An output batch fixed at 1 is real: the scores of all images are reshaped into one row."""
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "fc"], ["mm"])]
    one_row = out_shape is not None and out_shape[0] == 1
    nodes.append(helper.make_node("Reshape", ["mm", "row"], ["logits"]) if one_row
                 else helper.make_node("Identity", ["mm"], ["logits"]))
    fc = numpy_helper.from_array(np.eye(3, dtype=np.float32)[:, :classes].copy(), "fc")
    row = numpy_helper.from_array(np.array([1, -1], np.int64), "row")
    graph = helper.make_graph(nodes, "gap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)] if outputs
                              else [], initializer=[fc, row])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    doc = spec or {"input": {"size": [32, 32], "mean": [0, 0, 0], "std": [1, 1, 1]}, "labels": ["a", "b", "c"]}
    entry = model.metadata_props.add()
    entry.key, entry.value = model_spec.METADATA_SPEC_KEY, spec_json if spec_json is not None else json.dumps(doc)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case,expect", [
    ("no-outputs", "it has no output"),
    ("dynamic-in-fixed-out", "has a dynamic batch axis (N) but for 2 images its output 'logits' has shape [1, 6]"),
    ("huge-input", "MB a frame, more than the 256 MB allowed"),
    ("empty-output", "its output 'logits' has shape [2, 0]"),
    ("metadata-deep", "nested deeper than 32 levels"),
    ("metadata-nan", "NaN is not a number JSON allows"),
    ("metadata-bigint", "integer string conversion"),
])
def test_models_that_would_fail_on_their_first_frame_are_refused(case, expect, tmp_path):
    path = tmp_path / "m.onnx"
    if case == "no-outputs":
        gap_model(path, ["N", 3, 32, 32], None, outputs=False)
    elif case == "dynamic-in-fixed-out":
        gap_model(path, ["N", 3, 32, 32], [1, 3])
    elif case == "huge-input":
        gap_model(path, ["N", 3, "H", "W"], ["N", 3], spec={"input": {"size": [8192, 8192]}, "labels": ["a", "b", "c"]})
    elif case == "empty-output":
        gap_model(path, ["N", 3, 32, 32], ["N", "C"], spec={"input": {"size": [32, 32]}}, classes=0)
    elif case == "metadata-deep":
        gap_model(path, ["N", 3, 32, 32], ["N", 3], spec_json="[" * 100_000 + "]" * 100_000)
    elif case == "metadata-nan":
        gap_model(path, ["N", 3, 32, 32], ["N", 3], spec_json='{"output_scale": NaN}')
    else:
        gap_model(path, ["N", 3, 32, 32], ["N", 3], spec_json='{"label_offset": ' + "1" * 5000 + "}")
    result, _ = run_measured("--model", path, "--source", "synthetic://64x48", "--validate-config")
    line = one_error(result)
    assert f"model {path}" in line and expect in line, line


@pytest.mark.parametrize("where, input_doc, key", [
    ("sidecar", "{size: [32, 32], mean: [0, 0, 0], std: [1.0e-45, 1, 1]}", "input.std"),    # every frame NaN
    ("sidecar", "{size: [32, 32], mean: [0, 0, 0], std: [1, 1, 1.0e+30]}", "input.std"),
    ("sidecar", "{size: [32, 32], mean: [0, -1.0e+38, 0], std: [1, 1, 1]}", "input.mean"),
    ("sidecar", "{size: [32, 32], mean: [0, .nan, 0], std: [1, 1, 1]}", "input.mean"),
    ("metadata", '{"size": [32, 32], "mean": [0, 0, 0], "std": [0.229, 0.0, 0.225]}', "input.std"),
    ("metadata", '{"size": [32, 32], "mean": [1e300, 0, 0], "std": [1, 1, 1]}', "input.mean"),
])
def test_mean_and_std_are_range_checked_when_the_description_is_read(tmp_path, where, input_doc, key):
    path = tmp_path / "m.onnx"
    if where == "metadata":
        gap_model(path, ["N", 3, 32, 32], ["N", 3], spec_json='{"input": ' + input_doc + ', "labels": ["a", "b", "c"]}')
    else:
        gap_model(path, ["N", 3, 32, 32], ["N", 3])
        del_model = onnx.load(str(path))
        del del_model.metadata_props[:]
        onnx.save(del_model, str(path))
        (tmp_path / "m.yaml").write_text(f"input: {input_doc}\nlabels: [a, b, c]\n")
    for extra in (["--validate-config"], ["--max-frames", "3"]):
        result, _ = run_measured("--model", path, "--source", "synthetic://64x48", *extra)
        line = one_error(result)
        assert f"key '{key}" in line and "RuntimeWarning" not in result.stderr, line


# --- property-based: generated YAML/JSON at the loaders ------------------------------------------

KEYS = ["source", "model", "threads", "top_k", "capture", "mqtt", "http", "log", "level", "timeout", "width",
        "height", "keepalive", "input", "size", "labels", "label_offset", "output", "output_scale", "mean", "std"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["rgb", "nchw", "float32", "info", "logits"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                 max_size=4)), max_leaves=30)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
YAML_BITS = ["&a ", "*a", "<<: ", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "!!int ", "!!binary ", "!!python/none",
             "0x", "1e999", "'", '"', "#", "?", ",", "|", ">", "%YAML 1.1\n", "---\n", "\t", "\\x00", "9" * 50]
yaml_texts = st.one_of(
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.lists(st.one_of(st.sampled_from(YAML_BITS), st.sampled_from(KEYS), st.text(max_size=5)),
             max_size=40).map("".join),
    st.text(max_size=200),
)
json_texts = st.one_of(documents.map(json.dumps), st.text(alphabet='[]{}",:0123456789.eE-truefalsnNI ', max_size=200))


def _one_line_user_error(exc: UserError) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) < MAX_LINE, text[:500]


# HYP_N=2000 for a longer hunt (150 takes ~2 s; 1000 ~12 s)
HYP = settings(max_examples=int(os.environ.get("HYP_N", 150)), deadline=2000,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@HYP
@given(text=yaml_texts)
@example(text="!!int")                 # IndexError inside PyYAML
@example(text="a: !!timestamp 2020-13-45")
def test_generated_yaml_at_the_config_loader(text, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg = config.load(str(path))
    except UserError as exc:
        _one_line_user_error(exc)
    else:
        assert isinstance(cfg, config.Config)


@HYP
@given(text=yaml_texts)
@example(text="!!int")
@example(text="labels: \"\\0\"")          # a NUL in a file name
def test_generated_yaml_at_the_sidecar_loader(text, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        spec = model_spec.load_sidecar(path)
    except UserError as exc:
        _one_line_user_error(exc)
    else:
        assert isinstance(spec, model_spec.ModelSpec)


@HYP
@given(text=json_texts)
def test_generated_json_at_the_metadata_loader(text):
    try:
        spec = model_spec.from_metadata({model_spec.METADATA_SPEC_KEY: text}, "m.onnx")
    except UserError as exc:
        _one_line_user_error(exc)
    else:
        assert isinstance(spec, model_spec.ModelSpec)


def test_error_messages_never_repr_a_whole_value():
    # The path the alias bomb took: every type of a union tried, each error repr()ing the value.
    from edge_runtime.util import schema
    big = [[str(i)] * 10 for i in range(200_000)]
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        schema.build(config.Config, {"source": big, "top_k": 3})
    assert time.monotonic() - t0 < 1.0
    assert len(str(err.value)) < 150 and "\n" not in str(err.value), str(err.value)
    assert "expected a string or null, got [['0', '0', '0', '0', ...], ['1', '1'," in str(err.value)
    huge = int("f" * 6000, 16)          # str() of it raises ValueError (Python's digit limit)
    assert schema.short(huge) == f"an integer of {huge.bit_length()} bits"
