"""install.sh: shellcheck, its options, the platform branches (--dry-run), --dev for real in a copy of
the repo, and a real root install/upgrade/uninstall in a throw-away mount namespace.

The real install runs `unshare --mount` with overlays on /etc, /opt and /var/lib, so useradd, the
venv, the config, the unit and `systemctl enable` all happen for real while the machine itself is
left untouched (the overlays' upper layers live under pytest's tmp_path)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

INSTALL = REPO / "install.sh"
DEBIAN_OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n'
UBUNTU_OS_RELEASE = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\n'


def install_sh(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120,
               script: Path = INSTALL) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True,
                          env=env or os.environ.copy(), cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def platform_env(tmp_path):
    """Environment that makes install.sh see a plain Debian 12 PC; tweak it for other platforms."""
    os_release = tmp_path / "os-release"
    os_release.write_text(DEBIAN_OS_RELEASE)
    env = os.environ.copy()
    env.update(EDGE_OS_RELEASE=str(os_release), EDGE_DT_MODEL=str(tmp_path / "no-dt-model"),
               EDGE_RPI_ISSUE=str(tmp_path / "no-rpi-issue"))
    return env


def shim(tmp_path: Path, name: str, body: str) -> Path:
    """A fake command first on PATH."""
    bindir = tmp_path / "shims"
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return bindir


def actions(output: str) -> list[str]:
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def first_index(lines: list[str], needle: str) -> int:
    for i, line in enumerate(lines):
        if needle in line:
            return i
    raise AssertionError(f"no action contains {needle!r}:\n" + "\n".join(lines))


# -- static checks and options ----------------------------------------------------------------------

def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck missing: apt-get install shellcheck")
    proc = subprocess.run(["shellcheck", "--severity=style", str(INSTALL), str(REPO / "tests/arm64/run.sh")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_strict_mode_and_executable():
    text = INSTALL.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(INSTALL, os.X_OK) and os.access(REPO / "tests/arm64/run.sh", os.X_OK)


def test_help_lists_every_option():
    proc = install_sh("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for option in ("--dry-run", "--prefix", "/opt/edge-runtime", "--model", "--sha256", "--no-service", "--dev",
                   "--uninstall", "--purge", "--python", "--litert"):
        assert option in proc.stdout, option


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option: --bogus"),
    (["--prefix"], "--prefix needs a value"),
    (["--prefix", "relative/dir"], "absolute path"),
    (["--purge"], "--purge only goes with --uninstall"),
    (["--model", "https://example.com/m.onnx"], "needs --sha256"),
    (["--model", "ftp://example.com/m.onnx", "--sha256", "a" * 64], "http:// or https://"),
    (["--model", "m.onnx", "--sha256", "xyz"], "64 hex digits"),
    (["--sha256", "a" * 64], "--sha256 needs --model"),
    (["--dev", "--model", "m.onnx"], "--model only goes with an install"),
])
def test_usage_errors_exit_2(args, message):
    proc = install_sh("--dry-run", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


# -- the platform branches, as --dry-run ------------------------------------------------------------

WATCHED = ["/etc/edge-runtime", "/var/lib/edge-runtime", "/opt/edge-runtime",
           "/etc/systemd/system/edge-runtime.service",
           "/etc/systemd/system/multi-user.target.wants/edge-runtime.service"]


def machine_state() -> dict:
    user = subprocess.run(["getent", "passwd", "edge-runtime"], capture_output=True, text=True).stdout
    return {"user": user, **{p: os.path.lexists(p) for p in WATCHED}}


def test_dry_run_prints_every_action_and_changes_nothing(platform_env, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    platform_env["TMPDIR"] = str(tmpdir)
    before = machine_state()
    proc = install_sh("--dry-run", env=platform_env)
    assert proc.returncode == 0, proc.stderr
    steps = actions(proc.stderr)
    print("\n".join(steps))
    order = [first_index(steps, needle) for needle in (
        "useradd --system --user-group --groups video --home-dir /var/lib/edge-runtime",
        "install -d -m 0755 /opt/edge-runtime",
        "install -d -m 0750 -o root -g edge-runtime /var/lib/edge-runtime/models",
        "-m venv /opt/edge-runtime/venv",
        f"/opt/edge-runtime/venv/bin/python -m pip --disable-pip-version-check install -r {REPO}/requirements.txt",
        "install --no-deps --force-reinstall",
        # no --model and none installed: torchvision's ImageNet MobileNetV3-Small, converted without torch
        "/opt/edge-runtime/venv/bin/python -m edge_runtime fetch-model small --output "
        "/var/lib/edge-runtime/models/model.onnx",
        "chown root:edge-runtime /var/lib/edge-runtime/models/model.onnx",
        "write /etc/edge-runtime/config.yaml.default",
        "/etc/edge-runtime/config.yaml.default /etc/edge-runtime/config.yaml",
        "install -m 0644 " + str(REPO / "systemd/edge-runtime.service") + " /etc/systemd/system/edge-runtime.service",
        "systemctl enable edge-runtime.service",
    )]
    assert order == sorted(order), steps
    assert "--system-site-packages" not in proc.stderr           # only on Raspberry Pi OS
    assert "apt-get" not in proc.stderr and "picamera2" not in proc.stderr
    assert "dry run: printing the actions, changing nothing" in proc.stderr
    assert proc.stdout == ""                                     # progress on stderr: stdout is for pipes
    assert "no model at" not in proc.stderr
    assert machine_state() == before
    assert list(tmpdir.iterdir()) == []                          # not even a temp file


def test_dry_run_offline_says_what_to_do_instead(platform_env):
    """No download (EDGE_NO_DOWNLOAD=1, as with no internet): the exact commands to get a model there."""
    platform_env["EDGE_NO_DOWNLOAD"] = "1"
    proc = install_sh("--dry-run", env=platform_env)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert "fetch-model" not in "\n".join(actions(proc.stderr))
    assert "no model installed (no internet here?)" in proc.stderr
    assert "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth" in proc.stderr
    assert ("/opt/edge-runtime/venv/bin/python -m edge_runtime fetch-model small --from FILE.pth --output "
            "/var/lib/edge-runtime/models/model.onnx") in proc.stderr
    assert "no model at /var/lib/edge-runtime/models/model.onnx yet" in proc.stderr


def test_dry_run_dev_makes_the_demo_model_without_torch(platform_env):
    proc = install_sh("--dev", "--dry-run", env=platform_env)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    steps = actions(proc.stderr)
    pip = steps[first_index(steps, "pip --disable-pip-version-check install -r")]
    assert "requirements-dev.txt" in pip and "models/requirements.txt" not in pip and "torch" not in pip
    if not (REPO / "models" / "mobilenetv3_small.onnx").exists():
        assert any(s.endswith(f"-m edge_runtime fetch-model small --output {REPO}/models/mobilenetv3_small.onnx")
                   for s in steps), steps
    models = install_sh("--dev", "--models", "--dry-run", env=platform_env)
    assert models.returncode == 0, models.stderr
    steps = actions(models.stderr)
    pip = steps[first_index(steps, "pip --disable-pip-version-check install -r")]
    assert f"-r {REPO}/models/requirements.txt" in pip
    if os.uname().machine == "x86_64":
        torch = first_index(steps, "torch==")
        assert "--index-url https://download.pytorch.org/whl/cpu" in steps[torch]
        assert torch < first_index(steps, f"-r {REPO}/models/requirements.txt")
    assert install_sh("--models", "--dry-run", env=platform_env).returncode == 2


def test_dry_run_litert_is_installed_only_when_asked_for(platform_env):
    """--litert adds requirements-litert.txt, to the service's venv and to --dev's; never without it."""
    plain = "\n".join(actions(install_sh("--dry-run", env=platform_env).stderr))
    assert "requirements-litert.txt" not in plain
    service = install_sh("--litert", "--dry-run", env=platform_env)
    assert service.returncode == 0, service.stderr
    assert (f"/opt/edge-runtime/venv/bin/python -m pip --disable-pip-version-check install -r "
            f"{REPO}/requirements-litert.txt") in actions(service.stderr)
    dev = install_sh("--dev", "--litert", "--dry-run", env=platform_env)
    steps = actions(dev.stderr)
    pip = steps[first_index(steps, "pip --disable-pip-version-check install -r")]
    assert dev.returncode == 0 and f"-r {REPO}/requirements-litert.txt" in pip and "models/" not in pip
    refused = install_sh("--uninstall", "--litert", "--dry-run", env=platform_env)
    assert refused.returncode == 2 and "--litert goes with an install or --dev" in refused.stderr


def test_dry_run_raspberry_pi_os(platform_env, tmp_path):
    model = tmp_path / "dt-model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    platform_env["EDGE_DT_MODEL"] = str(model)
    proc = install_sh("--dry-run", "--prefix", "/opt/er", env=platform_env)
    assert proc.returncode == 0, proc.stderr
    steps = actions(proc.stderr)
    apt = first_index(steps, "apt-get install -y -q --no-install-recommends python3-picamera2")
    assert first_index(steps, "apt-get update") < apt < first_index(steps, "useradd")
    assert first_index(steps, "-m venv --system-site-packages /opt/er/venv") > apt
    assert "Raspberry Pi OS" in proc.stderr and "Raspberry Pi 5 Model B" in proc.stderr
    assert "simplejpeg" in proc.stderr                           # the numpy 1.x/2.x fix for picamera2
    # /etc/rpi-issue alone also says Raspberry Pi OS.
    platform_env["EDGE_DT_MODEL"] = str(tmp_path / "none")
    (tmp_path / "rpi-issue").write_text("Raspberry Pi reference 2024-11-19\n")
    platform_env["EDGE_RPI_ISSUE"] = str(tmp_path / "rpi-issue")
    assert "python3-picamera2" in install_sh("--dry-run", env=platform_env).stderr


def test_dry_run_ubuntu_on_a_pi_is_not_raspberry_pi_os(platform_env, tmp_path):
    (tmp_path / "os-release").write_text(UBUNTU_OS_RELEASE)
    model = tmp_path / "dt-model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    platform_env["EDGE_DT_MODEL"] = str(model)
    proc = install_sh("--dry-run", env=platform_env)
    assert proc.returncode == 0, proc.stderr
    assert "picamera2" not in proc.stderr and "--system-site-packages" not in proc.stderr


def test_dry_run_model_url_and_no_service(platform_env):
    proc = install_sh("--dry-run", "--no-service", "--model", "https://example.com/m.onnx", "--sha256", "AB" * 32,
                      env=platform_env)
    assert proc.returncode == 0, proc.stderr
    steps = actions(proc.stderr)
    download = first_index(steps, "https://example.com/m.onnx /var/lib/edge-runtime/models/.model.onnx.new")
    check = first_index(steps, "sha256sum /var/lib/edge-runtime/models/.model.onnx.new")
    assert "ab" * 32 in steps[check] and download < check < first_index(steps, "mv -f")
    assert "systemctl" not in proc.stderr and "edge-runtime.service" not in proc.stderr
    assert "--no-service: run it yourself" in proc.stderr


def test_refuses_32_bit_userland(platform_env, tmp_path):
    bindir = shim(tmp_path, "dpkg", 'echo armhf')
    platform_env["PATH"] = f"{bindir}:{platform_env['PATH']}"
    proc = install_sh("--dry-run", env=platform_env)
    assert proc.returncode == 1
    assert "32-bit userland (dpkg architecture 'armhf'" in proc.stderr
    assert "Raspberry Pi OS (64-bit)" in proc.stderr and "arm64" in proc.stderr
    assert actions(proc.stderr) == []                            # refused before doing anything


def test_refuses_32_bit_by_long_bit(platform_env, tmp_path):
    shim(tmp_path, "dpkg", 'echo amd64')
    bindir = shim(tmp_path, "getconf", 'echo 32')
    platform_env["PATH"] = f"{bindir}:{platform_env['PATH']}"
    proc = install_sh("--dry-run", env=platform_env)
    assert proc.returncode == 1 and "getconf LONG_BIT = 32" in proc.stderr


def test_refuses_old_python(platform_env, tmp_path):
    old = shim(tmp_path, "python3.9", 'echo 3.9') / "python3.9"
    for args in (["--dry-run"], ["--dev", "--dry-run"]):
        proc = install_sh(*args, "--python", old, env=platform_env)
        assert proc.returncode == 1, proc.stdout
        assert "Python 3.9" in proc.stderr and "needs Python 3.11 or newer" in proc.stderr
        assert "--python python3.11" in proc.stderr                 # the fix is named
    proc = install_sh("--dry-run", "--python", tmp_path / "no-such-python", env=platform_env)
    assert proc.returncode == 1 and "no '" in proc.stderr


def test_needs_root_for_a_real_install(platform_env, tmp_path):
    if os.geteuid() != 0:
        proc = install_sh(env=platform_env)
    else:
        bindir = shim(tmp_path, "id", 'echo 1000')
        platform_env["PATH"] = f"{bindir}:{platform_env['PATH']}"
        proc = install_sh(env=platform_env)
    assert proc.returncode == 1 and "needs root" in proc.stderr and "--dev" in proc.stderr


def test_uninstall_dry_run_changes_nothing(platform_env):
    before = machine_state()
    proc = install_sh("--uninstall", "--purge", "--dry-run", env=platform_env)
    assert proc.returncode == 0, proc.stderr
    assert machine_state() == before


# -- --dev, for real, in a copy of the repository -----------------------------------------------------

def copy_checkout(dest: Path) -> Path:
    """The files a clone of this working tree would have (tracked + untracked-not-ignored)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.timeout(900)
def test_dev_install_in_a_fresh_checkout(tmp_path):
    """`./install.sh --dev` makes ./.venv, installs the requirements and the package in editable mode,
    makes the demo model without torch, and a second run is a quick no-op. Only requirements.txt is
    installed here (EDGE_DEV_REQUIREMENTS): the test tools are in CI's own `./install.sh --dev --models` run."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    checkout = copy_checkout(tmp_path / "checkout")
    env = os.environ.copy()
    env["EDGE_DEV_REQUIREMENTS"] = "requirements.txt"
    env["EDGE_NO_DOWNLOAD"] = "1"               # no internet in tests: the untrained demo model
    for var in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(var, None)
    first = install_sh("--dev", env=env, cwd=checkout, timeout=850, script=checkout / "install.sh")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    python = checkout / ".venv" / "bin" / "python"
    probe = subprocess.run([str(python), "-I", "-c",
                            "import json, edge_runtime, onnxruntime, cv2, numpy, yaml, paho.mqtt, prometheus_client;"
                            "import importlib.metadata as m;"
                            "print(json.dumps([edge_runtime.__file__, m.version('edge-runtime')]))"],
                           capture_output=True, text=True, cwd="/", timeout=120)
    assert probe.returncode == 0, probe.stderr
    path, version = json.loads(probe.stdout)
    assert Path(path) == checkout / "edge_runtime" / "__init__.py"          # editable: the checkout itself
    assert first.stdout == ""                                               # progress on stderr
    # The demo model, made without torch (none in this venv), and marked untrained.
    demo = checkout / "models" / "mobilenetv3_small.onnx"
    meta = subprocess.run([str(python), "-I", "-c", "import importlib.util, onnx, sys; "
                           "print(importlib.util.find_spec('torch') is None, "
                           "{p.key: p.value for p in onnx.load(sys.argv[1]).metadata_props}['edge_runtime.weights'])",
                           str(demo)], capture_output=True, text=True, timeout=120)
    assert meta.returncode == 0, meta.stderr
    assert meta.stdout.startswith("True untrained (random init, seed 0"), meta.stdout
    t0 = time.monotonic()
    second = install_sh("--dev", env=env, cwd=checkout, timeout=300, script=checkout / "install.sh")
    elapsed = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stderr and "installed in editable mode" in second.stderr
    assert "Successfully installed" not in second.stderr
    print(f"\n--dev: first run ok; second run {elapsed:.1f} s (a no-op)")
    assert elapsed < 60


# -- a real root install, upgrade and uninstall in a throw-away mount namespace ------------------------

class Sandbox:
    """Commands run in a new mount namespace where /etc, /opt and /var/lib are overlays whose
    changes land under `base`: the host is never modified, and state persists between calls."""

    LAYERS = ("etc", "opt", "var/lib")

    def __init__(self, base: Path):
        self.base = base
        for layer in self.LAYERS:
            for kind in ("up", "work"):
                (base / kind / layer).mkdir(parents=True, exist_ok=True)

    def run(self, *cmd: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
        mounts = "; ".join(
            f"mount -t overlay overlay -o lowerdir=/{layer},upperdir={self.base}/up/{layer},"
            f"workdir={self.base}/work/{layer} /{layer}" for layer in self.LAYERS)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "NOTIFY_SOCKET")}
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-c",
                               f'set -e; {mounts}; exec "$@"', "sandbox", *map(str, cmd)],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd="/")
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        return proc


def sandbox_usable(tmp_path: Path) -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("unshare") or not shutil.which("runuser"):
        return "needs unshare and runuser (util-linux)"
    if not Path("/usr/bin/python3").exists() or subprocess.run(
            ["/usr/bin/python3", "-c", "import sys, ensurepip, venv; assert sys.version_info >= (3, 11)"]
    ).returncode != 0:
        return "needs Debian's /usr/bin/python3 (3.11+) with venv: apt-get install python3-venv"
    probe = Sandbox(tmp_path / "probe").run("true")
    if probe.returncode != 0:
        return f"cannot make a mount namespace with overlays here: {probe.stderr.strip()}"
    return None


@pytest.mark.timeout(900)
def test_real_install_upgrade_uninstall_in_a_sandbox(tmp_path, tiny_model):
    reason = sandbox_usable(tmp_path)
    if reason:
        pytest.skip(reason)
    box = Sandbox(tmp_path / "box")
    prefix = "/opt/edge-runtime-test"
    venv_python = f"{prefix}/venv/bin/python"
    sha = hashlib.sha256(Path(tiny_model).read_bytes()).hexdigest()
    # /usr/bin/python3: the service user must be able to run the venv's interpreter (a pyenv under
    # /root would not do); on a board this is the default python3 anyway.
    base = ("--python", "/usr/bin/python3", "--prefix", prefix)

    # 1. A first install, with a model checked against its SHA-256.
    first = box.run("bash", INSTALL, *base, "--model", tiny_model, "--sha256", sha)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-5000:]
    assert "useradd" in out and "systemctl enable edge-runtime.service" in out and "sha256 " + sha in out
    # No camera here, so the service user's config check says so (camera: 0) and nothing is started.
    assert "config OK" in out or "no camera 0" in out

    ident = box.run("id", "edge-runtime", check=True).stdout
    assert "(video)" in ident and "uid=" in ident
    assert box.run("getent", "passwd", "edge-runtime", check=True).stdout.strip().endswith(
        ":/var/lib/edge-runtime:/usr/sbin/nologin")
    config_text = box.run("cat", "/etc/edge-runtime/config.yaml", check=True).stdout
    config = yaml.safe_load(config_text)
    assert config["model"] == "/var/lib/edge-runtime/models/model.onnx"
    assert config["camera"] == 0 and "source" not in config
    assert config["snapshots"] == {"dir": "/var/lib/edge-runtime/snapshots"}
    assert "sudo systemctl restart edge-runtime" in config_text
    modes = box.run("stat", "-c", "%n %a %U:%G", "/etc/edge-runtime/config.yaml", "/var/lib/edge-runtime",
                    "/var/lib/edge-runtime/models", "/var/lib/edge-runtime/models/model.onnx", check=True).stdout
    assert modes.split("\n")[:4] == [
        "/etc/edge-runtime/config.yaml 640 root:edge-runtime",
        "/var/lib/edge-runtime 750 edge-runtime:edge-runtime",
        "/var/lib/edge-runtime/models 750 root:edge-runtime",
        "/var/lib/edge-runtime/models/model.onnx 640 root:edge-runtime"], modes
    assert box.run("sha256sum", "/var/lib/edge-runtime/models/model.onnx", check=True).stdout.startswith(sha)
    unit = box.run("cat", "/etc/systemd/system/edge-runtime.service", check=True).stdout
    assert f"ExecStart={venv_python} -m edge_runtime --config /etc/edge-runtime/config.yaml" in unit
    assert box.run("systemctl", "is-enabled", "edge-runtime.service").stdout.strip() == "enabled"
    if shutil.which("systemd-analyze"):
        verify = box.run("systemd-analyze", "verify", "/etc/systemd/system/edge-runtime.service")
        assert verify.returncode == 0 and (verify.stdout + verify.stderr).strip() == "", verify.stderr

    # 2. The installed daemon, as the service user with the installed config (only the source differs).
    run = box.run("runuser", "-u", "edge-runtime", "--", venv_python, "-m", "edge_runtime",
                  "--config", "/etc/edge-runtime/config.yaml", "--source", "synthetic://160x120",
                  "--max-frames", "3")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    assert [x["frame"] for x in lines if x["type"] == "prediction"] == [0, 1, 2]
    assert lines[-1]["type"] == "stats" and lines[-1]["final"] is True

    # 3. A model whose checksum does not match: the install stops, the old model stays.
    other = tmp_path / "other.onnx"
    other.write_bytes(Path(tiny_model).read_bytes() + b"tampered")
    bad = box.run("bash", INSTALL, *base, "--model", other, "--sha256", sha)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr and "old model" in bad.stderr
    assert box.run("sha256sum", "/var/lib/edge-runtime/models/model.onnx", check=True).stdout.startswith(sha)
    assert box.run("ls", "-A", "/var/lib/edge-runtime/models", check=True).stdout.split() == ["model.onnx"]

    # 4. Re-running upgrades in place and keeps a locally edited config.
    box.run("sh", "-c", "echo '# my local edit' >> /etc/edge-runtime/config.yaml", check=True)
    again = box.run("bash", INSTALL, *base)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "kept the existing /etc/edge-runtime/config.yaml" in again.stderr
    assert "useradd" not in again.stderr and "is up to date" in again.stderr
    assert "# my local edit" in box.run("cat", "/etc/edge-runtime/config.yaml", check=True).stdout
    assert box.run("test", "-f", "/etc/edge-runtime/config.yaml.default").returncode == 0

    # 5. Uninstall (with the copy of install.sh it left in the prefix): program and unit go, config,
    #    models and user stay.
    gone = box.run("bash", f"{prefix}/install.sh", "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert f"uninstalling edge-runtime from {prefix}" in gone.stderr        # prefix read from the unit
    for path in (prefix, "/etc/systemd/system/edge-runtime.service",
                 "/etc/systemd/system/multi-user.target.wants/edge-runtime.service",
                 "/etc/edge-runtime/config.yaml.default"):
        assert box.run("test", "-e", path).returncode == 1, path
    for path in ("/etc/edge-runtime/config.yaml", "/var/lib/edge-runtime/models/model.onnx"):
        assert box.run("test", "-e", path).returncode == 0, path
    assert box.run("id", "edge-runtime").returncode == 0

    # 6. --purge takes the rest.
    purge = box.run("bash", INSTALL, "--uninstall", "--purge")
    assert purge.returncode == 0, purge.stderr
    for path in ("/etc/edge-runtime", "/var/lib/edge-runtime"):
        assert box.run("test", "-e", path).returncode == 1, path
    assert box.run("getent", "passwd", "edge-runtime").returncode == 2


def test_installed_config_has_snapshots_in_the_state_directory(tmp_path):
    """The config install.sh writes (its render_config, run alone): the model's installed path, camera 0,
    and event snapshots in the unit's StateDirectory; valid for the daemon's own config loader."""
    script = (f'SRC_DIR={REPO}; STATE_DIR=/var/lib/edge-runtime; MODEL_FILE=/var/lib/edge-runtime/models/model.onnx; '
              f'SERVICE_USER=edge-runtime; VENV=/opt/edge-runtime/venv; CONFIG_FILE=/etc/edge-runtime/config.yaml; '
              f'eval "$(sed -n "/^render_config() {{/,/^}}/p" {INSTALL})"; render_config')
    rendered = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    (tmp_path / "config.yaml").write_text(rendered)
    from edge_runtime import config as config_mod
    cfg = config_mod.load(str(tmp_path / "config.yaml"))
    assert cfg.snapshots.dir == "/var/lib/edge-runtime/snapshots" and cfg.camera == 0
    assert cfg.model == "/var/lib/edge-runtime/models/model.onnx"
