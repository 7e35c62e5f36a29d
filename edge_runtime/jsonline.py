"""The one JSON encoding of every record the daemon emits (stdout, MQTT, HTTP): compact, UTF-8."""

from __future__ import annotations

import json


def dumps(obj: dict) -> str:
    """Standard JSON only: NaN/Infinity raise (the pipeline refuses non-finite results before this)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
