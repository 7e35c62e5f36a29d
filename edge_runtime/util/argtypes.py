"""argparse value types shared by the daemon's tools (collect, fetch-model) and the workstation tools (models/)."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def number_between(low: float, high: float = math.inf, unit: str = "") -> Callable[[str], float]:
    """A finite float in [low, high] (NaN and infinity refused), e.g. `--every`, `--timeout`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            noun = f"a number of {unit}" if unit else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            wanted = f"{low:g} to {high:g} {unit}".rstrip() if math.isfinite(high) else f"a number >= {low:g}"
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse
