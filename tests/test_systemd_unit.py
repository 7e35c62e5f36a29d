"""systemd/edge-runtime.service: it verifies cleanly, its hardening scores OK, and it says what the
daemon and install.sh rely on. Needs Debian's `systemd` package (systemd-analyze), which .ci/run installs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

UNIT = REPO / "systemd" / "edge-runtime.service"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing: apt-get install systemd")


def unit_settings() -> dict[str, list[str]]:
    """KEY -> every value it has in the unit (keys repeat, e.g. DeviceAllow=)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def rooted_unit(tmp_path_factory) -> Path:
    """A root holding the unit as installed, with an executable at ExecStart's path, so that
    `verify` checks the unit and not whether /opt/edge-runtime exists on this machine."""
    root = tmp_path_factory.mktemp("root")
    unit_dir = root / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    python = root / "opt" / "edge-runtime" / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return root


@needs_analyze
def test_verify_is_silent(rooted_unit):
    # verify exits 0 on unknown keys and only warns: any output at all is a failure.
    unit = rooted_unit / "etc" / "systemd" / "system" / UNIT.name
    text = unit.read_text().replace("/opt/edge-runtime/", f"{rooted_unit}/opt/edge-runtime/")
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and output == "", output


@needs_analyze
def test_verify_catches_a_typo(tmp_path):
    # The check above would be worthless if verify stayed quiet on mistakes: prove it speaks up.
    bad = tmp_path / UNIT.name
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes"))
    proc = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilegs" in proc.stdout + proc.stderr


@needs_analyze
def test_security_exposure_is_ok():
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", output)
    assert match, output
    exposure, verdict = float(match.group(1)), match.group(2)
    print(f"\nsystemd-analyze security --offline=true {UNIT.name}: exposure {exposure} {verdict}")
    failing = [line.strip() for line in output.splitlines() if line.lstrip().startswith("✗")]
    print("remaining exposure items:\n  " + "\n  ".join(failing))
    assert exposure <= MAX_EXPOSURE and verdict == "OK", output


def test_service_contract():
    s = unit_settings()
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) >= 10
    assert one["Restart"] == "on-failure" and int(one["RestartSec"]) >= 1
    assert one["RestartPreventExitStatus"] == "2"          # config/model errors: no restart loop
    assert one["KillSignal"] == "SIGTERM" and int(one["TimeoutStopSec"]) >= 3   # daemon stops within 2 s
    assert one["ExecStart"] == ("/opt/edge-runtime/venv/bin/python -m edge_runtime "
                                "--config /etc/edge-runtime/config.yaml")
    assert one["StandardOutput"] == "null"                # JSON stream off; the journal gets the log
    assert one["StandardError"] == "journal"
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]     # SIGHUP reloads (tests/test_reload.py)
    assert one["User"] == "edge-runtime" and "video" in one["SupplementaryGroups"].split()
    assert one["StateDirectory"] == "edge-runtime" and one["WorkingDirectory"] == "/var/lib/edge-runtime"
    assert one["ConfigurationDirectory"] == "edge-runtime"
    assert "StartLimitIntervalSec" in s and "StartLimitBurst" in s
    assert one["WantedBy"] == "multi-user.target"


def test_hardening_settings():
    s = unit_settings()
    one = {k: v[-1] for k, v in s.items()}
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictNamespaces", "LockPersonality", "RestrictRealtime",
                "RestrictSUIDSGID", "MemoryDenyWriteExecute"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert s["SystemCallFilter"][0] == "@system-service"
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert one["DevicePolicy"] == "closed"
    assert set(s["DeviceAllow"]) == {"char-video4linux rw", "char-media rw", "char-dma_heap rw",
                                     "char-vchiq rw", "char-vcio rw"}
    assert "ReadWritePaths" not in s                       # StateDirectory= is the only writable place
    # Resource caps are the user's call: documented in the unit's header, not set.
    assert "MemoryMax" not in s and "CPUQuota" not in s
    header = UNIT.read_text().split("[Unit]")[0]
    assert "MemoryMax=" in header and "CPUQuota=" in header and "systemctl edit edge-runtime" in header


def test_parses_as_ini():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
