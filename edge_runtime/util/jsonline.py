"""The one JSON encoding of every record the daemon emits (stdout, MQTT, HTTP): compact, UTF-8."""

from __future__ import annotations

import json


# Made once: json.dumps with any option builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: dict) -> str:
    """Standard JSON only: NaN/Infinity raise (the pipeline refuses non-finite results before this)."""
    return _ENCODER.encode(obj)
