"""Board health beside the FPS: CPU temperature, Pi firmware throttling flags, our RSS.

Paths come from the environment when set (EDGE_THERMAL_PATH, EDGE_THROTTLED_PATH), so tests and
odd boards can point them elsewhere. Each reader returns None where the board has no such thing.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Bits of the Pi firmware's get_throttled word (raspberrypi.com documentation, vcgencmd).
THROTTLE_BITS = {
    0: "under_voltage", 1: "arm_freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "arm_freq_capped_occurred", 18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
_THROTTLED_SYSFS = "/sys/devices/platform/soc/soc:firmware/get_throttled"


def _thermal_path() -> Path | None:
    override = os.environ.get("EDGE_THERMAL_PATH")
    if override:
        return Path(override)
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*"))
    # Prefer a zone that names the CPU/SoC (RK3399 has several); fall back to zone 0 (the Pi's only one).
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            continue
        if any(word in kind for word in ("cpu", "soc", "x86_pkg")):
            return zone / "temp"
    return zones[0] / "temp" if zones else None


def cpu_temp_c(path: Path | None = None) -> float | None:
    path = path or _thermal_path()
    if path is None:
        return None
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def decode_throttled(word: int) -> dict[str, bool]:
    flags = {name: bool(word & (1 << bit)) for bit, name in THROTTLE_BITS.items()}
    flags["raw"] = hex(word)  # type: ignore[assignment]
    return flags


def throttled(path: str | None = None) -> dict | None:
    """The Pi firmware's throttling flags, or None off a Pi."""
    path = path or os.environ.get("EDGE_THROTTLED_PATH") or _THROTTLED_SYSFS
    try:
        return decode_throttled(int(Path(path).read_text().strip(), 16))
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    if path == _THROTTLED_SYSFS and shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2).stdout
            return decode_throttled(int(out.strip().split("=")[-1], 16))
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
    return None


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * _PAGE / 1e6, 1)
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)

