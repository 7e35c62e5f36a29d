"""JSON lines on stdout, one object per line, flushed per line.

Writing happens in a writer thread behind a bounded queue, so a reader that stops reading (a stuck
pipe, a slow journald) cannot stall inference. For live sources the oldest unwritten line is
dropped and counted (`stdout_dropped` in the stats); for files and folders the queue applies
backpressure instead, so no prediction is ever lost there.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
from collections import deque
from typing import IO

from edge_runtime.util.jsonline import dumps
from edge_runtime.core.sink import OutputClosed, Sink

log = logging.getLogger(__name__)

MAX_PENDING = 256


def closed_pipe(exc: BaseException) -> bool:
    """Only a reader that went away ends the run quietly; any other write error is a bug to surface."""
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


class OutputError(RuntimeError):
    """Writing to stdout failed for another reason than a closed pipe (the writer thread's error)."""


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, predictions: bool = True, stream: IO[str] | None = None, *, max_pending: int = MAX_PENDING):
        self.predictions = predictions
        self.stream = stream or sys.stdout
        self.live = False
        self.max_pending = max_pending
        self.dropped = 0
        self._stats = None
        self._stop: threading.Event | None = None
        self._pending: deque[dict] = deque()   # serialised in the writer thread, off the inference loop
        self._cond = threading.Condition()
        self._closing = False
        self._broken = False
        self._error: BaseException | None = None     # a write error that is not a closed pipe
        self._thread: threading.Thread | None = None

    def start(self, context):
        super().start(context)
        self.live, self._stats, self._stop = context.live, context.stats, context.stop
        # Files and folders write in the caller: backpressure is what they want, and a writer thread
        # would cost a thread wake-up per frame. Live sources must never wait on a reader.
        if self.live:
            self._thread = threading.Thread(target=self._writer, name="stdout-writer", daemon=True)
            self._thread.start()
        return self

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                objs = list(self._pending)
                self._pending.clear()
                self._cond.notify_all()
            try:
                self.stream.write("".join(dumps(obj) + "\n" for obj in objs))
                self.stream.flush()
            except Exception as exc:
                with self._cond:
                    self._broken = True
                    if not closed_pipe(exc):
                        self._error = exc
                    self._pending.clear()
                    self._cond.notify_all()
                return

    def _put(self, obj: dict) -> None:
        if self._thread is None:
            self._write(dumps(obj) + "\n")
            return
        with self._cond:
            if self._broken:
                self._raise_broken()
            if len(self._pending) >= self.max_pending:
                if self.live or (self._stop is not None and self._stop.is_set()):
                    self._pending.popleft()
                    self.dropped += 1
                    if self._stats is not None:
                        self._stats.set_extra("stdout_dropped", self.dropped)
                else:
                    while len(self._pending) >= self.max_pending and not self._broken:
                        if self._stop is not None and self._stop.is_set():
                            self._pending.popleft()     # stopping: do not wait on a reader forever
                            break
                        self._cond.wait(0.1)
                    if self._broken:
                        self._raise_broken()
            self._pending.append(obj)
            self._cond.notify_all()

    def _write(self, text: str) -> None:
        """In the caller (files, folders, synthetic): write and flush; a closed pipe ends the run."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            if not closed_pipe(exc):
                raise
            self._broken = True
            raise OutputClosed() from None

    def prediction(self, record, frame):
        if self.predictions:
            self._put(record)

    def frame_records(self, records, frame):
        """With regions, a frame's N records in one write (files, folders, synthetic): one system call
        a frame instead of N."""
        if not self.predictions:
            return
        if self._thread is not None or len(records) == 1:
            for record in records:
                self._put(record)
            return
        self._write("".join(dumps(record) + "\n" for record in records))

    def stats(self, line):
        self._put(line)

    def event(self, event):
        self._put(event)        # always, also with --quiet-predictions: events are what people wait for

    def close(self) -> None:
        """Write what is pending (give up after a few seconds if nobody reads), then stop the writer."""
        if self._thread is None:
            if self._broken:
                raise OutputClosed()
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=3.0)
        if self._broken:
            self._raise_broken()

    def _raise_broken(self):
        if self._error is not None:
            raise OutputError(f"writing to stdout failed: {type(self._error).__name__}: {self._error}") \
                from self._error
        raise OutputClosed()

    @property
    def stuck(self) -> bool:
        """The reader stopped reading: the writer is still blocked in write() after close()."""
        return self._thread is not None and self._thread.is_alive()
