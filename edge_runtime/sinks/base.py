"""A sink receives every prediction record and every stats line. Small base, short implementations."""

from __future__ import annotations

from ..sources import Frame


class OutputClosed(Exception):
    """The reader of our output went away (closed pipe): end quietly."""


class Sink:
    name = "sink"
    wants_images = False    # True: prediction() needs frame.image (otherwise it is let go after preprocessing)

    def prediction(self, record: dict, frame: Frame) -> None:
        pass

    def stats(self, line: dict) -> None:
        pass

    def close(self) -> None:
        pass
