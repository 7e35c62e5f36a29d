"""JSON lines on stdout, one object per line, flushed per line."""

from __future__ import annotations

import json
import sys
from typing import IO

from .base import OutputClosed, Sink


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, predictions: bool = True, stream: IO[str] | None = None):
        self.predictions = predictions
        self.stream = stream or sys.stdout

    def _write(self, obj: dict) -> None:
        try:
            self.stream.write(dumps(obj) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None

    def prediction(self, record, frame):
        if self.predictions:
            self._write(record)

    def stats(self, line):
        self._write(line)
