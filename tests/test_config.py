"""Config file and flags: every invalid input is refused before anything starts, naming the key."""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_daemon
from edge_runtime import config
from edge_runtime.util.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_the_shipped_default_config_is_valid_and_commented():
    text = config.DEFAULT_CONFIG_FILE.read_text()
    assert text.count("#") > 20
    cfg = config.load(str(config.DEFAULT_CONFIG_FILE))
    defaults = config.Config()
    assert cfg.source == "synthetic://640x480?fps=30"
    assert (cfg.top_k, cfg.threads, cfg.capture, cfg.log) == (defaults.top_k, defaults.threads, defaults.capture,
                                                                defaults.log)
    # the same model file (resolved against the config's folder, or the working directory's as before)
    assert cfg.model.endswith(defaults.model)


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "m.onnx").write_bytes(b"x")
    path = write(tmp_path / "conf", "model: m.onnx\nmodel_spec: {labels: l.txt}\nmqtt: {url: 'mqtts://h/p', "
                                    "ca_file: ca.pem}\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(path, {})
    assert cfg.model == str(tmp_path / "conf" / "m.onnx")
    assert cfg.model_spec["labels"] == str(tmp_path / "conf" / "l.txt")
    assert cfg.mqtt.ca_file == str(tmp_path / "conf" / "ca.pem")
    assert config.load(path, {"model": "other.onnx"}).model == "other.onnx"      # a flag: as given (cwd)


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, "source: synthetic://64x64\ntop_k: 3\ncapture: {fps: 10}\n")
    cfg = config.load(path, {"top_k": 7, "camera": 0})
    assert cfg.top_k == 7 and cfg.camera == 0 and cfg.source is None and cfg.capture.fps == 10


@pytest.mark.parametrize("text, key, expected", [
    ("top_k: 0\n", "top_k", ">= 1"),
    ("threads: two\n", "threads", "an integer"),
    ("capture: {fps: -3}\n", "capture.fps", "> 0"),
    ("capture: {width: 640}\n", "capture.width", "both"),
    ("capture: {widht: 640, height: 480}\n", "capture.widht", "unknown key"),
    ("log: {level: loud}\n", "log.level", "one of debug, info"),
    ("loop: yes please\n", "loop", "true/false"),
    ("stats_interval: .nan\n", "stats_interval", "a number"),
    ("model_spec: [1, 2]\n", "model_spec", "a mapping"),
    ("source: synthetic://1x1\ncamera: 0\n", "source", "not both"),
])
def test_invalid_values_name_file_and_key(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key and err.value.file == path
    assert expected in str(err.value)


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "top_k: 3\nsource: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        config.load(path)


def test_yaml_tags_are_never_executed(tmp_path):
    path = write(tmp_path, "source: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    with pytest.raises(ConfigError):
        config.load(path)


def test_cli_reports_the_flag_and_validate_config_checks_everything(tmp_path, tiny_model):
    result = run_daemon("--source", "synthetic://64x64", "--top-k", "0", "--model", tiny_model)
    assert result.returncode == 2 and "--top-k" in result.stderr and "Traceback" not in result.stderr
    path = write(tmp_path, f"source: synthetic://64x64\nmodel: {tiny_model}\n")
    ok = run_daemon("--config", path, "--validate-config")
    assert ok.returncode == 0 and "config OK" in ok.stdout
    bad = run_daemon("--config", write(tmp_path, "source: bogus://x\n"), "--model", tiny_model, "--validate-config")
    assert bad.returncode == 2 and "unknown scheme 'bogus'" in bad.stderr


# --- property-based: arbitrary config documents never crash, and errors always name a key ----

KEYS = ["source", "camera", "model", "threads", "top_k", "max_frames", "stats_interval", "loop", "realtime",
        "quiet_predictions", "capture", "log", "model_spec", "bogus_key"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12))
nested_keys = st.sampled_from(KEYS + ["fps", "level", "width"])
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(nested_keys, inner, max_size=3)),
                      max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(st.sampled_from(KEYS), values, max_size=5))
def test_any_config_document_is_accepted_or_refused_with_a_key(tmp_path, doc):
    path = write(tmp_path, yaml.safe_dump(doc))
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        assert exc.file == path and exc.key, str(exc)
        assert exc.key.split(".")[0].split("[")[0] in doc
    else:
        assert cfg.top_k >= 1 and cfg.threads >= 0 and cfg.stats_interval > 0


@settings(max_examples=25, deadline=None)
@given(flag=st.sampled_from(["--top-k", "--threads", "--max-frames", "--stats-interval", "--camera"]),
       value=st.one_of(st.integers(-10**9, 0).map(str), st.text(string.ascii_letters, min_size=1, max_size=5),
                       st.sampled_from(["nan", "-inf", "1e999", "0x10", ""])))
def test_any_bad_flag_value_exits_2_without_traceback(flag, value):
    if flag == "--stats-interval" and value in ("1e999", "0x10"):
        value = "-1"
    if flag in ("--camera", "--threads") and value.lstrip("-").isdigit() and int(value) == 0:
        value = "-1"      # 0 is a valid camera number, and threads 0 means "all cores"
    where = ["--model", "x.onnx"] if flag == "--camera" else ["--source", "synthetic://8x8"]
    result = run_daemon(*where, flag, value, "--validate-config", timeout=30)
    assert result.returncode == 2, (flag, value, result.stderr)
    assert "Traceback" not in result.stderr
    assert flag in result.stderr
