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
        log.info("event: %s changed from %s to %s (score %.3f, frame %d)%s", event["region"], event["from"],
                 event["to"], event["score"], event["frame"], shot)

    def stats(self, line):
        log.info("%s%s", "final: " if line.get("final") else "", summary(line))
