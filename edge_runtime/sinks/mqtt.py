"""MQTT publishing (paho-mqtt), Home Assistant-ready.

Topics under the prefix (default `edge_runtime/<hostname>`):
  availability       `online` (retained) while connected; `offline` by Last Will and on a clean exit
  prediction         every prediction, the same JSON as the stdout line (QoS `mqtt.qos`)
  state              the top-1 label, only when it changes after `publish.min_frames` confident frames
  state/attributes   {"label", "score", "frame", "ts"} of that change (Home Assistant attributes)
  stats              the stats JSON, every stats interval
  event              every state change (a region's, or the whole frame's), the event JSON, not retained
With `regions:` the state topics are per region instead: `<region>/state` (retained, the label) and
`<region>/state/attributes`, and `<region>/snapshot` (retained) the JPEG of the region's last event.
With `mqtt.homeassistant: true`, retained discovery configs under
`<discovery_prefix>/sensor/<node_id>/<object>/config` create a device with sensors for the label
(score as an attribute), FPS, inference latency and CPU temperature; with regions, a sensor and an
MQTT `image` entity (`<discovery_prefix>/image/...`, showing the last event's snapshot) per region
instead of the label sensor.

The inference loop only appends to a bounded queue (drop oldest, counted); a publisher thread
serialises and hands messages to paho, whose own network thread does the I/O and reconnects with
backoff. A broker that is down, black-holed or slow therefore costs the loop nothing: messages wait
in the queue (at most `mqtt.max_queued`) and the oldest are dropped and counted in the stats line
(`"mqtt": {"connected", "sent", "dropped", "queued"}`). Each loss and each reconnect is logged once.

Why one file of ~480 lines: one sink, one protocol; its topics, Home Assistant discovery, reconnection
and state tracking (StateTracker, pure) change together.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import deque

from .. import __version__
from edge_runtime.util.addresses import BrokerUrl, default_prefix, hostname, parse_broker_url, redact, topic_safe
from edge_runtime.util.jsonline import dumps
from edge_runtime.util.errors import UserError
from edge_runtime.watch.events import RegionState
from edge_runtime.util.ratelimit import RateLimited
from edge_runtime.util.safeio import check_regular
from edge_runtime.core.sink import Sink

log = logging.getLogger(__name__)

WINDOW = 64            # messages handed to paho but not yet written (QoS 0) or acknowledged (QoS 1/2)
FLUSH_S = 1.0          # on close: how long pending messages may take to go out
EXTRA_EVERY_S = 0.25   # how often the counters in the stats line are refreshed
BATCH_S = 0.005        # the publisher's pause between batches
SILENT_S = 10.0        # a broker that accepted TCP but has not answered CONNECT for this long is reported
STABLE_S = 30.0        # a connection that lasted less did not really work: the reconnect backoff keeps growing
FLAP_LOG_S = 60.0      # "lost" and "reconnected" warnings: at most one of each per this many seconds
IMAGE_POLL_S = 0.1     # how often an event's snapshot is looked for (its writer is a thread of its own)
IMAGE_WAIT_S = 10.0    # ... and for how long, before it is given up (a full disk: it never comes)


# Re-exported for callers that knew them here.
parse_url = parse_broker_url
__all__ = ["MqttSink", "StateTracker", "discovery_configs", "BrokerUrl", "parse_url", "redact", "default_prefix"]


# --- the state topic -------------------------------------------------------------------------

class StateTracker:
    """Top-1 label, debounced: a new state after `min_frames` consecutive frames at or above `threshold`
    (events.RegionState's rule, for the whole frame's state topic; non-finite scores never count)."""

    def __init__(self, threshold: float, min_frames: int):
        self._state = RegionState("frame", threshold, min_frames)

    @property
    def current(self) -> str | None:
        return self._state.current

    def update(self, label: str | None, score: float) -> bool:
        """Feed one prediction; True when `label` has just become the new state."""
        return self._state.step(label, score)


# --- Home Assistant discovery ----------------------------------------------------------------

def discovery_configs(prefix: str, node_id: str, discovery_prefix: str, device_name: str,
                      regions: tuple[str, ...] = ()) -> dict[str, dict]:
    """Topic -> retained config payload, one per sensor (Home Assistant MQTT discovery); with `regions`
    (their names), a sensor and an image entity per region instead of the whole frame's label."""
    availability = f"{prefix}/availability"
    device = {"identifiers": [f"edge_runtime_{node_id}"], "name": device_name, "model": "edge_runtime",
              "manufacturer": "edge_runtime", "sw_version": __version__}
    origin = {"name": "edge_runtime", "sw_version": __version__}
    common = {"availability_topic": availability, "payload_available": "online",
              "payload_not_available": "offline", "device": device, "origin": origin}
    sensors = {
        "label": {"name": "Label", "state_topic": f"{prefix}/state",
                  "json_attributes_topic": f"{prefix}/state/attributes", "icon": "mdi:eye"},
        "fps": {"name": "FPS", "state_topic": f"{prefix}/stats", "value_template": "{{ value_json.fps.inference }}",
                "unit_of_measurement": "fps", "state_class": "measurement", "icon": "mdi:speedometer",
                "entity_category": "diagnostic"},
        "inference_ms": {"name": "Inference latency", "state_topic": f"{prefix}/stats",
                         "value_template": "{{ value_json.latency_ms.inference.p50 }}",
                         "unit_of_measurement": "ms", "device_class": "duration", "state_class": "measurement",
                         "entity_category": "diagnostic"},
        "cpu_temp": {"name": "CPU temperature", "state_topic": f"{prefix}/stats",
                     # null (no thermal zone) renders as "None", which Home Assistant shows as unknown
                     "value_template": "{{ value_json.cpu_temp_c }}", "unit_of_measurement": "°C",
                     "device_class": "temperature", "state_class": "measurement",
                     "entity_category": "diagnostic"},
    }
    images: dict[str, dict] = {}
    if regions:
        del sensors["label"]     # its state topic is not published with regions
        for name in regions:
            sensors[f"region_{name}"] = {"name": name, "state_topic": f"{prefix}/{name}/state",
                                         "json_attributes_topic": f"{prefix}/{name}/state/attributes",
                                         "icon": "mdi:eye"}
            images[f"region_{name}"] = {"name": f"{name} snapshot", "image_topic": f"{prefix}/{name}/snapshot",
                                        "content_type": "image/jpeg"}
    configs = {f"{discovery_prefix}/sensor/{node_id}/{obj}/config": {**body, **common, "unique_id": f"{node_id}_{obj}"}
               for obj, body in sensors.items()}
    configs.update({f"{discovery_prefix}/image/{node_id}/{obj}/config":
                    {**body, **common, "unique_id": f"{node_id}_{obj}_snapshot"} for obj, body in images.items()})
    return configs


# --- the sink --------------------------------------------------------------------------------

class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, cfg, publish):
        """`cfg`: config.MqttConfig (url set, ca_file already resolved); `publish`: config.PublishConfig.
        Nothing connects until start()."""
        self.cfg = cfg
        self.url = parse_broker_url(cfg.url)
        self.prefix = self.url.prefix
        self.tracker = StateTracker(publish.threshold, publish.min_frames)
        self.client_id = cfg.client_id or f"edge_runtime-{topic_safe(hostname())}"
        self.node_id = topic_safe(self.client_id)
        self.topics = {name: f"{self.prefix}/{name}" for name in
                       ("availability", "prediction", "stats", "event")}     # states: _state_messages
        self.regions: tuple[str, ...] = ()          # names of the watched regions (from start's context)
        # region (None: the whole frame, without regions) -> (label, attributes) of its state, republished
        self._states: dict[str | None, tuple[str, bytes]] = {}
        self._images: dict[str, tuple[str, float]] = {}          # region -> (snapshot file, give up at)
        self._images_due = 0.0
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._window: deque = deque()          # (MQTTMessageInfo, qos) handed to paho
        self._connected = False
        self._closing = False
        self._flush_deadline = 0.0
        self.sent = 0
        self.dropped = 0
        self._redacted: dict[str, str] = {}
        self._lost_at: float | None = None
        self._ever_connected = False
        self._failure_logged: str | None = None
        self._extra_due = 0.0
        self._started = time.monotonic()
        self._log_lock = threading.Lock()
        self._up_at = 0.0                       # when the current connection was accepted (CONNACK)
        self._backoff = cfg.reconnect_min_delay
        self._lost_log = RateLimited(FLAP_LOG_S)
        self._back_log = RateLimited(FLAP_LOG_S)
        self.client = None
        self._worker: threading.Thread | None = None

    def start(self, context) -> "MqttSink":
        """Connect in the background (paho's network thread) and start the publisher thread."""
        import paho.mqtt.client as mqtt

        super().start(context)
        self._mqtt = mqtt
        self.stats_obj = context.stats
        self.regions = tuple(r.name for r in context.regions)
        self._read_snapshot = context.snapshot_reader
        cfg = self.cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            try:
                if cfg.ca_file is not None:
                    check_regular(cfg.ca_file)      # a FIFO or a device would block inside ssl for ever
                client.tls_set(ca_certs=cfg.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UserError(f"mqtt.ca_file {cfg.ca_file}: cannot load it: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        client.will_set(self.topics["availability"], "offline", qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_delay, cfg.reconnect_max_delay)
        client.connect_timeout = 3.0
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._started = time.monotonic()
        self._update_extra(force=True)
        log.info("mqtt: publishing to %s (topics %s/...)", self.url.redacted(), self.prefix)
        client.connect_async(self.url.host, self.url.port, keepalive=cfg.keepalive)
        client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._worker.start()
        return self

    # -- called from the inference loop: queue appends only --

    def _enqueue(self, item: tuple) -> None:
        with self._cond:
            if len(self._queue) >= self.cfg.max_queued:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            if self._connected:         # otherwise nothing can be sent: let the publisher sleep
                self._cond.notify()

    def prediction(self, record, frame):
        if self.cfg.predictions:
            self._enqueue(("prediction", record))
        if "region" in record:          # regions: their states come from events
            return
        top = record["top"][0] if record["top"] else None
        if top is not None and self.tracker.update(top["label"], top["score"]):
            self._enqueue(("state", record))

    def stats(self, line):
        self._enqueue(("stats", line))

    def event(self, event):
        self._enqueue(("event", event))
        if event["region"] in self.regions:
            self._enqueue(("region_state", event))
            if event.get("snapshot") and self._read_snapshot is not None:
                with self._cond:        # published once its writer has written it (its own thread)
                    self._images[event["region"]] = (event["snapshot"], time.monotonic() + IMAGE_WAIT_S)

    # -- the publisher thread --

    def _source(self, record: dict) -> dict:
        src = record.get("source")
        if not isinstance(src, str):
            return record
        clean = self._redacted.get(src)
        if clean is None:
            clean = self._redacted.setdefault(src, redact(src))
        return record if clean == src else {**record, "source": clean}

    def _render(self, item: tuple) -> list[tuple[str, bytes, int, bool]]:
        kind, obj = item
        if kind == "prediction":
            return [(self.topics["prediction"], dumps(self._source(obj)).encode(), self.cfg.qos, False)]
        if kind == "stats":
            return [(self.topics["stats"], dumps(obj).encode(), self.cfg.qos, False)]
        if kind == "event":
            return [(self.topics["event"], dumps(obj).encode(), 1, False)]
        if kind == "region_state":
            attributes = dumps({"label": obj["to"], "score": obj["score"], "frame": obj["frame"], "ts": obj["ts"],
                                "from": obj["from"], "snapshot": obj["snapshot"]}).encode()
            self._states[obj["region"]] = (obj["to"], attributes)
            return self._state_messages(obj["region"], obj["to"], attributes)
        top = obj["top"][0]
        attributes = dumps({"label": top["label"], "score": top["score"], "frame": obj["frame"],
                            "ts": obj["ts"]}).encode()
        self._states[None] = (top["label"], attributes)
        return self._state_messages(None, top["label"], attributes)

    def _state_messages(self, region: str | None, label: str, attributes: bytes) -> list[tuple[str, bytes, int, bool]]:
        """<prefix>/state (the whole frame) or <prefix>/<region>/state, with its attributes, retained."""
        base = self.prefix if region is None else f"{self.prefix}/{region}"
        retain = self.cfg.retain_state
        return [(f"{base}/state/attributes", attributes, 1, retain), (f"{base}/state", label.encode(), 1, retain)]

    def _image_messages(self) -> list[tuple[str, bytes, int, bool]]:
        """Snapshots written since the last look, as retained JPEG messages (read outside the lock)."""
        with self._cond:
            waiting = list(self._images.items())
        messages = []
        for region, (name, give_up) in waiting:
            data = self._read_snapshot(name)
            if data is None and time.monotonic() < give_up:
                continue
            with self._cond:
                if self._images.get(region, (None,))[0] == name:
                    del self._images[region]
            if data is not None:
                messages.append((f"{self.prefix}/{region}/snapshot", data, 1, True))
        return messages

    def _prune(self) -> None:
        """Forget messages paho has finished with (caller holds self._cond)."""
        while self._window:
            info, _ = self._window[0]
            try:
                done = info.is_published()
            except (ValueError, RuntimeError):
                done = None
            if done is False:
                break
            self._window.popleft()
            if done:
                self.sent += 1
            else:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._prune()
                    if self._closing and (not self._queue or not self._connected
                                          or time.monotonic() > self._flush_deadline):
                        return
                    room = WINDOW - len(self._window)
                    if self._queue and self._connected and room > 0:
                        break
                    if self._images and self._connected and time.monotonic() >= self._images_due:
                        break
                    self._update_extra()
                    if not self._ever_connected and self._failure_logged is None \
                            and time.monotonic() - self._started > SILENT_S:
                        self._down("no answer from the broker")
                    # a full window (slow broker) is polled; otherwise wait for work or a connection
                    self._cond.wait(0.05 if (self._queue or self._images) and self._connected else 0.5)
                # a batch: fewer lock round trips with the inference loop
                items = [self._queue.popleft() for _ in range(min(room, len(self._queue)))]
                looking = bool(self._images) and time.monotonic() >= self._images_due
            infos = []
            if looking:
                self._images_due = time.monotonic() + IMAGE_POLL_S
                for topic, payload, qos, retain in self._image_messages():
                    infos.append((self.client.publish(topic, payload, qos=qos, retain=retain), qos))
            for item in items:
                try:
                    messages = self._render(item)
                except Exception as exc:    # a record we cannot encode must not kill the publisher
                    log.warning("mqtt: cannot encode a %s message: %s", item[0], exc)
                    continue
                for topic, payload, qos, retain in messages:
                    infos.append((self.client.publish(topic, payload, qos=qos, retain=retain), qos))
            with self._cond:
                for info, qos in infos:
                    if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                        self._window.append((info, qos))
                    else:
                        self.dropped += 1          # the connection went away meanwhile
            self._update_extra()
            # Let a few more messages gather: at high frame rates the inference loop then mostly finds
            # nobody to wake (a wake-up per message costs it several µs); adds at most 5 ms of latency.
            time.sleep(BATCH_S)

    def _update_extra(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._extra_due:
            return
        self._extra_due = now + EXTRA_EVERY_S
        self.stats_obj.set_extra("mqtt", {"connected": self._connected, "sent": self.sent,
                                           "dropped": self.dropped, "queued": len(self._queue) + len(self._window)})

    # -- paho's network thread --

    def _announce(self, client) -> None:
        """Availability, discovery and the current state: on every (re)connect and on HA's birth message."""
        client.publish(self.topics["availability"], "online", qos=1, retain=True)
        if self.cfg.homeassistant:
            for topic, payload in discovery_configs(self.prefix, self.node_id, self.cfg.discovery_prefix,
                                                    f"edge_runtime {hostname()}", self.regions).items():
                client.publish(topic, json.dumps(payload, ensure_ascii=False, allow_nan=False), qos=1, retain=True)
        for region, (label, attributes) in list(self._states.items()):
            for topic, payload, qos, retain in self._state_messages(region, label, attributes):
                client.publish(topic, payload, qos=qos, retain=retain)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            reason = str(reason_code)
            if self._failure_logged != reason:
                self._failure_logged = reason
                log.error("mqtt: broker %s refused the connection: %s; retrying with backoff (up to %g s apart)",
                          self.url.redacted(), reason, self.cfg.reconnect_max_delay)
            return
        if self.cfg.homeassistant:
            client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
        self._announce(client)
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        self._up_at = time.monotonic()
        if self._ever_connected:
            self._back_log.warn(log, "mqtt: reconnected to %s after %.1f s (%d messages dropped so far)",
                                self.url.redacted(), time.monotonic() - (self._lost_at or time.monotonic()),
                                self.dropped)
        elif self._lost_at is not None:
            log.warning("mqtt: connected to %s after %.1f s of retries", self.url.redacted(),
                        time.monotonic() - self._lost_at)
        else:
            log.info("mqtt: connected to %s", self.url.redacted())
        self._lost_at = None
        self._failure_logged = None
        self._ever_connected = True
        self._update_extra(force=True)

    def _down(self, why: str) -> None:
        with self._log_lock:
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            if self._failure_logged is not None or self._closing or self._connected:
                return
            self._failure_logged = why
            if self._ever_connected:
                self._lost_log.warn(log, "mqtt: lost the connection to %s (%s); reconnecting with backoff "
                                    "(up to %g s apart), holding at most %d messages", self.url.redacted(), why,
                                    self.cfg.reconnect_max_delay, self.cfg.max_queued)
            else:
                log.warning("mqtt: cannot reach broker %s (%s); retrying with backoff (up to %g s apart), "
                            "predictions go on", self.url.redacted(), why, self.cfg.reconnect_max_delay)

    def _on_connect_fail(self, client, userdata):
        self._down("connection failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        with self._cond:
            was = self._connected
            self._connected = False
            kept = deque()
            for info, qos in self._window:         # QoS 0 packets paho had not written are gone
                if qos == 0 and not info.is_published():
                    self.dropped += 1
                else:
                    kept.append((info, qos))
            self._window = kept
        self._update_extra(force=True)
        if was:
            self._grow_backoff(client)
        if was or not self._ever_connected:
            why = str(reason_code)
            self._down(("connection closed" if why == "Unspecified error" else why) if was
                       else "no answer from the broker")

    def _grow_backoff(self, client) -> None:
        """paho restarts its backoff at the minimum on every CONNACK: a broker that accepts and then
        closes (a full broker, a bad ACL, a proxy) would be hammered every reconnect_min_delay. Only a
        connection that stayed up STABLE_S starts again from the minimum."""
        if time.monotonic() - self._up_at < STABLE_S:
            self._backoff = min(self._backoff * 2, self.cfg.reconnect_max_delay)
        else:
            self._backoff = self.cfg.reconnect_min_delay
        client.reconnect_delay_set(self._backoff, self.cfg.reconnect_max_delay)

    def _on_message(self, client, userdata, message):
        if message.topic == f"{self.cfg.discovery_prefix}/status" and message.payload == b"online":
            self._announce(client)          # Home Assistant restarted: send the discovery configs again

    # -- shutdown --

    def close(self) -> None:
        if self.client is None:
            return
        with self._cond:
            self._closing = True
            self._flush_deadline = time.monotonic() + FLUSH_S
            self._cond.notify_all()
        self._worker.join(FLUSH_S + 0.5)
        if self._connected:
            try:
                self.client.publish(self.topics["availability"], "offline", qos=1, retain=True).wait_for_publish(1.0)
            except (ValueError, RuntimeError):
                pass
        self.client.disconnect()           # also ends a pending connect attempt's loop promptly
        # paho's loop thread ends promptly after disconnect(); bound the wait if it sits in a connect attempt
        stopper = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(1.0)
        with self._cond:
            self._prune()
            self.dropped += len(self._queue)
            self._queue.clear()
        self._update_extra(force=True)
        log.info("mqtt: closed (%d messages sent, %d dropped)", self.sent, self.dropped)
