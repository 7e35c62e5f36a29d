"""The human log (stderr → journald): stats always, predictions only when asked."""

from __future__ import annotations

import logging

from edge_runtime.core.stats import summary
from edge_runtime.core.sink import Sink

log = logging.getLogger("edge_runtime")


class LogSink(Sink):
    name = "log"

    def __init__(self, predictions: bool = False):
        self.predictions = predictions

    def prediction(self, record, frame):
        if self.predictions:
            top = record["top"][0] if record["top"] else {"label": "-", "score": 0.0}
            where = f" {record['path']}" if "path" in record else ""
            log.info("frame %d%s: %s (%.3f)", record["frame"], where, top["label"], top["score"])

    def event(self, event):
        shot = f", snapshot {event['snapshot']}" if event.get("snapshot") else ""
        # The first state has no previous one: "door is open", not "changed from None".
        change = f"is {event['to']}" if event["from"] is None else f"changed from {event['from']} to {event['to']}"
        log.info("event: %s %s (score %.3f, frame %d)%s", event["region"], change, event["score"], event["frame"], shot)

    def stats(self, line):
        log.info("%s%s", "final: " if line.get("final") else "", summary(line))
