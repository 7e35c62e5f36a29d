from .base import OutputClosed, Sink
from .log import LogSink
from .stdout import StdoutSink

__all__ = ["OutputClosed", "Sink", "LogSink", "StdoutSink"]
