"""The daemon's configuration: one typed tree, validated in one place.

A YAML file (`--config`, safe YAML without aliases) holds everything the flags hold; flags override
it. Unknown keys, wrong types and impossible values are refused before anything starts, naming
the file, the key path and what was expected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.util import safeio, schema
from edge_runtime.util.addresses import parse_broker_url, parse_listen
from edge_runtime.engines.litert import LiteRTOptions
from edge_runtime.util.errors import ConfigError
from edge_runtime.watch.gate import ClassifyConfig
from edge_runtime.watch.regions import RegionConfig, check_count, check_unique
from edge_runtime.util.schema import Invalid, all_of, at_most, between, field, greater_than, one_of
from edge_runtime.watch.snapshots import SnapshotConfig

log = logging.getLogger(__name__)

AUTO_BATCH = 4   # frames per session.run for throughput sources when `batch` is 0 (measured, docs/BENCHMARKS.md)
DEFAULT_MODEL = "models/mobilenetv3_small.onnx"
DEFAULT_CONFIG_FILE = Path(__file__).parent / "data" / "config.yaml"


@dataclass(frozen=True)
class CaptureConfig:
    width: int | None = field(None, check=between(1, 16384), help="frame size asked of a camera")
    height: int | None = field(None, check=between(1, 16384))
    fps: float | None = field(None, check=all_of(greater_than(0), at_most(1000)))
    timeout: float = field(5.0, check=all_of(greater_than(0), at_most(3600)),
                           help="a capture slower than this counts as lost")
    stall_timeout: float = field(10.0, check=all_of(greater_than(0), at_most(3600)),
                                 help="no frame from a live source for this long: reopen it")
    reconnect_initial_delay: float = field(0.5, check=all_of(greater_than(0), at_most(3600)))
    reconnect_max_delay: float = field(30.0, check=all_of(greater_than(0), at_most(3600)))
    # 50 Mpx: a 12 Mpx camera photo fits 4x over; decoding one at the limit takes 150 MB (BGR), which a
    # 1 GB board can spare, while a 1 MB PNG "bomb" of 30000x30000 would take 2.7 GB.
    max_image_pixels: int = field(50_000_000, check=between(1, 1 << 30),
                                  help="folder images with more pixels are skipped (counted), never decoded")

    def __post_init__(self):
        if (self.width is None) != (self.height is None):
            raise Invalid("width", "set both capture.width and capture.height, or neither")
        if self.reconnect_max_delay < self.reconnect_initial_delay:
            raise Invalid("reconnect_max_delay", "must be >= capture.reconnect_initial_delay")


@dataclass(frozen=True)
class LogConfig:
    level: str = field("info", check=one_of("debug", "info", "warning", "error"))
    predictions: bool = field(False, help="also log every prediction at info level (journal)")


def _mqtt_url(value: str) -> str | None:
    try:
        parse_broker_url(value)
    except ValueError as exc:
        return str(exc)          # never echoes the URL: it may hold a password
    return None


def _listen(value: str) -> str | None:
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class PublishConfig:
    threshold: float = field(0.5, check=between(0, 1),
                             help="the MQTT state topic changes only for a top-1 score at or above this")
    min_frames: int = field(3, check=between(1, 100_000), help="... for this many consecutive frames")


@dataclass(frozen=True)
class MqttConfig:
    url: str | None = field(None, check=_mqtt_url, help="mqtt://[user:pass@]host[:port]/prefix, mqtts:// for TLS")
    qos: int = field(0, check=between(0, 2), help="QoS of the prediction and stats messages")
    predictions: bool = field(True, help="publish every prediction (false: only state and stats)")
    retain_state: bool = field(True)
    ca_file: str | None = field(None, help="CA certificate(s) for mqtts:// (default: the system's)")
    client_id: str | None = field(None, help="default edge_runtime-<hostname>")
    keepalive: int = field(30, check=between(5, 65535))
    reconnect_min_delay: float = field(1.0, check=all_of(greater_than(0), at_most(3600)))
    reconnect_max_delay: float = field(60.0, check=all_of(greater_than(0), at_most(3600)))
    max_queued: int = field(1000, check=between(1, 100_000), help="unsent messages held while the broker is away")
    homeassistant: bool = field(False, help="publish Home Assistant MQTT discovery configs")
    discovery_prefix: str = field("homeassistant")

    def __post_init__(self):
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise Invalid("reconnect_max_delay", "must be >= mqtt.reconnect_min_delay")
        if self.ca_file is not None and self.url is not None and not self.url.lower().startswith("mqtts:"):
            raise Invalid("ca_file", "a CA file needs an mqtts:// url")
        if not self.discovery_prefix or any(c in self.discovery_prefix for c in "+#"):
            raise Invalid("discovery_prefix", "expected a topic without wildcards")


@dataclass(frozen=True)
class HttpConfig:
    listen: str | None = field(None, check=_listen,
                               help="[ADDRESS:]PORT; the address defaults to 127.0.0.1 (0.0.0.0: all interfaces)")
    mjpeg_fps: float = field(5.0, check=all_of(greater_than(0), at_most(30)), help="live view frame rate")
    jpeg_quality: int = field(80, check=between(1, 100))
    unhealthy_after: float = field(30.0, check=all_of(greater_than(0), at_most(86400)),
                                   help="/healthz is 503 after this many seconds without frames or source")
    max_connections: int = field(32, check=between(1, 1024))
    allowed_hosts: tuple[str, ...] = field((), help="extra Host names to serve (DNS names this device is reached by)")
    collect_dir: str | None = field(None, help="dataset folder for the live page's 'save this frame as' control "
                                              "(DIR/LABEL/*.jpg, as `collect`); unset: off")
    state_dir: str | None = field(None, help="the Teach page's taught models and which region runs which "
                                            "(default: collect_dir/.taught); never the config file")
    collect_max_per_label: int = field(1000, check=between(1, 1_000_000),
                                       help="POST /collect refuses (507) a label folder holding this many")
    collect_max_total: int = field(10000, check=between(1, 10_000_000),
                                   help="... and a dataset holding this many pictures in all")


@dataclass(frozen=True)
class Config:
    source: str | None = field(None, help="a source URI; see README")
    camera: int | None = field(None, check=between(0, 1023),
                               help="camera number: csi://N on a Pi, /dev/videoN elsewhere")
    model: str = field(DEFAULT_MODEL)
    model_spec: dict | None = field(None, help="sidecar-format description for a model that has none")
    threads: int = field(0, check=between(0, 256), help="inference threads (onnxruntime, LiteRT), 0 = all cores")
    lanes: int = field(0, check=between(0, 64), help="sessions on successive frames side by side, 0 = auto")
    batch: int = field(0, check=between(0, 64),
                       help="frames per inference for files, folders, unthrottled synthetic; 0 = auto")
    top_k: int = field(5, check=between(1, 1000))
    max_frames: int | None = field(None, check=between(1, 10**12))
    stats_interval: float = field(5.0, check=all_of(greater_than(0), at_most(86400)))
    loop: bool = field(False)
    realtime: bool = field(False)
    quiet_predictions: bool = field(False)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    log: LogConfig = field(default_factory=LogConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    regions: tuple[RegionConfig, ...] = field((), help="named crops of the frame, each classified")
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    litert: LiteRTOptions = field(default_factory=LiteRTOptions)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig,
                                     help="the gate: classify only on change or at an interval (watch/gate.py)")

    def __post_init__(self):
        if self.source is not None and self.camera is not None:
            raise Invalid("source", "give either source or camera, not both")
        check_count(self.regions)
        check_unique(self.regions)


def _load_yaml(path: Path) -> dict:
    try:
        data = safeio.load_yaml_file(path)   # regular file, bounded, UTF-8; no aliases, nesting bounded
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML{safeio.yaml_problem(exc)}", file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping of keys, got {type(data).__name__}", file=str(path))
    return data


def _set_path(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


# One rule for relative paths, applied once, here: a path written in a config file is relative to
# that file's folder; a path given on the command line, to the current directory. (A source is a URI,
# not a path: `source:` is taken as written.)
# `list[].key`: that key of every mapping in the list.
PATH_KEYS = ("model", "model_spec.labels", "mqtt.ca_file", "regions[].model", "snapshots.dir", "http.collect_dir",
             "http.state_dir")


def _path_nodes(data: dict, parents: list[str]) -> list:
    """The mappings that hold a PATH_KEYS leaf (a `name[]` part fans out over a list's items)."""
    nodes: list = [data]
    for part in parents:
        many = part.endswith("[]")
        key = part[:-2] if many else part
        children = [n.get(key) if isinstance(n, dict) else None for n in nodes]
        nodes = [item for c in children if isinstance(c, list) for item in c] if many else children
    return nodes


def _resolve_paths(data: dict, base: Path) -> None:
    for dotted in PATH_KEYS:
        *parents, leaf = dotted.split(".")
        for node in _path_nodes(data, parents):
            _resolve_one(node, leaf, dotted, base)


def _resolve_one(node: Any, leaf: str, dotted: str, base: Path) -> None:
    value = node.get(leaf) if isinstance(node, dict) else None
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return
    resolved = base / Path(value).expanduser()
    if dotted == "model" and not resolved.exists() and Path(value).exists():
        # Before this rule, `model:` was relative to the working directory: keep such configs working.
        log.warning("config: model %s is not in the config's folder %s; using ./%s from the working "
                    "directory (write an absolute path, or one relative to the config file)", value, base, value)
        return
    node[leaf] = str(resolved)


def load(config_file: str | None, overrides: dict[str, Any] | None = None,
         flag_names: dict[str, str] | None = None) -> Config:
    """The config file (if any) with command-line overrides (dotted keys) on top; relative paths resolved."""
    data: dict = {}
    file_label = None
    if config_file:
        data = _load_yaml(Path(config_file))
        file_label = config_file
        _resolve_paths(data, Path(config_file).resolve().parent)
        schema.build(Config, data, file=file_label)      # the file alone must be valid
    if overrides:
        for key, value in overrides.items():
            if key in ("source", "camera") and value is not None:
                data.pop("camera" if key == "source" else "source", None)   # a flag replaces either
            _set_path(data, key, value)
        try:
            return schema.build(Config, data, file=file_label)
        except ConfigError as exc:
            flag = (flag_names or {}).get(exc.key or "", exc.key)
            raise ConfigError(exc.detail, file="command line", key=flag) from None
    return schema.build(Config, data, file=file_label)


