#!/usr/bin/env bash
# tests/arm64/run.sh: prove install.sh and the daemon on Debian bookworm arm64 (what Raspberry Pi OS
# 64-bit and most RK3399 images are built on), under qemu-user emulation on an x86_64 host.
#
#   sudo tests/arm64/run.sh          # minutes; .ci/run calls it only when EDGE_ARM64=1
#
# What it does, each step timed:
#   1. a minimal bookworm arm64 root: restored from a cached tarball, or built with debootstrap
#      (about 8 minutes, most of it debootstrap's emulated second stage) and then cached;
#   2. install.sh inside it, as root, for real: apt, the edge-runtime user, the venv with aarch64 pip
#      wheels, /etc/edge-runtime/config.yaml, the model (--model with --sha256), the unit enabled
#      with systemctl (offline: systemd is not running in a chroot);
#   3. the installed daemon, as the edge-runtime user, on synthetic://320x240 for 3 frames with the
#      notify socket set; its JSON lines and notifications are checked on the host (check_output.py);
#   4. the root booted with systemd-nspawn: the installed unit under a real systemd (Type=notify, the
#      hardening, the user), its watchdog restarting a frozen daemon, a clean stop (EDGE_ARM64_BOOT=0 skips);
#   5. install.sh again (an in-place upgrade: config kept), then --uninstall (config and model kept).
#
# Environment:
#   EDGE_ARM64_CACHE    where the packed root is cached (default /var/cache/edge-runtime-arm64;
#                       the file is bookworm-arm64-root.tar.zst, about 170 MB; delete it to rebuild)
#   EDGE_ARM64_WORK     scratch folder for the unpacked root (default: a new /var/tmp/edge-arm64.*)
#   EDGE_ARM64_KEEP=1   keep the scratch root afterwards (for poking at it with chroot)
#   EDGE_ARM64_MIRROR   Debian mirror for debootstrap (default: debootstrap's own default mirror)
#   EDGE_ARM64_PYTHON   host Python with the `onnx` package, to generate the test model
#                       (default: the repo's .venv/bin/python, else python3)
#   QEMU_CPU            emulated CPU (default cortex-a76, a Pi 5; cortex-a72 is a Pi 4 / RK3399)
#
# Pitfalls handled (see the notes on arm64 emulation): binfmt_misc is mounted and qemu-aarch64
# enabled by hand (no systemd here); qemu 7.2 shows the guest the host's /proc/cpuinfo, on which
# onnxruntime's CPU detection crashes, so a Raspberry Pi 5 cpuinfo (cpuinfo-rpi5.txt) is bind-mounted
# over the root's /proc/cpuinfo; QEMU_CPU=cortex-a76 stops numpy's false floating-point warnings.
# Emulation says nothing about speed on a real board.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${EDGE_ARM64_CACHE:-/var/cache/edge-runtime-arm64}
TARBALL=$CACHE/bookworm-arm64-root.tar.zst
MIRROR=${EDGE_ARM64_MIRROR:-}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates,systemd
export QEMU_CPU=${QEMU_CPU:-cortex-a76}

T0=$SECONDS
PHASE_T=$SECONDS
log() { printf '[arm64 %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
phase_done() { log "$1 took $((SECONDS - PHASE_T)) s"; PHASE_T=$SECONDS; }
die() { printf '[arm64] FAILED: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot and mounts need it)"
[[ $(uname -m) == x86_64 || $(uname -m) == aarch64 ]] || die "unsupported host $(uname -m)"

# -- host tools -------------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v zstd >/dev/null || need+=(zstd)
if [[ $(uname -m) != aarch64 ]]; then
    command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
if ((${#need[@]})); then
    log "installing host packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if [[ $(uname -m) != aarch64 ]]; then
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is not enabled"
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "binfmt qemu-aarch64 lacks flag F (the chroot would need the qemu binary copied in)"
fi

# -- the root ---------------------------------------------------------------------------------------
WORK=${EDGE_ARM64_WORK:-$(mktemp -d /var/tmp/edge-arm64.XXXXXX)}
ROOT=$WORK/root
MOUNTS=()

cleanup() {
    local rc=$? m
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    if [[ ${EDGE_ARM64_KEEP:-0} == 1 ]]; then
        log "kept the root at $ROOT"
    elif [[ -d $WORK ]]; then
        # Only delete once nothing is mounted below it any more.
        if ! grep -q " $WORK/" /proc/mounts; then rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT

mkdir -p "$ROOT"
if [[ -f $TARBALL ]]; then
    log "restoring the root from $TARBALL"
    tar --zstd -xpf "$TARBALL" -C "$ROOT"
    phase_done "restore"
else
    log "no cached root at $TARBALL: debootstrap bookworm arm64 (minbase + $PACKAGES), several minutes"
    debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" bookworm "$ROOT" ${MIRROR:+"$MIRROR"} \
        >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb
    phase_done "debootstrap"
    mkdir -p "$CACHE"
    tar --zstd -cpf "$TARBALL.tmp" -C "$ROOT" .
    mv "$TARBALL.tmp" "$TARBALL"
    log "cached the fresh root: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
    phase_done "pack"
fi

mnt() { mount "$@"; MOUNTS+=("${!#}"); }
mnt -t proc proc "$ROOT/proc"
mnt --bind "$HERE/cpuinfo-rpi5.txt" "$ROOT/proc/cpuinfo"
mnt -t sysfs sysfs "$ROOT/sys"
mnt --bind /dev "$ROOT/dev"
mnt --bind /dev/pts "$ROOT/dev/pts"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

# pip inside reaches PyPI like the host does: if the host names a CA bundle for pip, use it there too.
chroot_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
            QEMU_CPU="$QEMU_CPU" DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
            PIP_DEFAULT_TIMEOUT=120)
if [[ -n ${PIP_CERT:-} && -f $PIP_CERT ]]; then
    cp "$PIP_CERT" "$ROOT/etc/ssl/certs/host-pip-ca.crt"
    chroot_env+=(PIP_CERT=/etc/ssl/certs/host-pip-ca.crt)
fi
[[ -n ${PIP_INDEX_URL:-} ]] && chroot_env+=(PIP_INDEX_URL="$PIP_INDEX_URL")
in_root() { chroot "$ROOT" /usr/bin/env -i "${chroot_env[@]}" "$@"; }

arch=$(in_root dpkg --print-architecture)
pyver=$(in_root python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')
log "root: dpkg architecture $arch, python3 $pyver"
[[ $arch == arm64 ]] || die "the root is $arch, not arm64"

# -- the source tree and a test model ----------------------------------------------------------------
SRC=/usr/local/src/edge-runtime
mkdir -p "$ROOT$SRC"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    # Tracked files plus untracked ones that are not ignored: what a checkout of this tree would have.
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do if [[ -e $REPO/$f ]]; then printf '%s\0' "$f"; fi; done \
        | tar -C "$REPO" --null -T - -cf - | tar -C "$ROOT$SRC" -xf -
else
    tar -C "$REPO" --exclude=./.venv --exclude=./.git -cf - . | tar -C "$ROOT$SRC" -xf -
fi

HOST_PY=${EDGE_ARM64_PYTHON:-}
if [[ -z $HOST_PY ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then HOST_PY=$REPO/.venv/bin/python; else HOST_PY=python3; fi
fi
"$HOST_PY" -c 'import onnx' 2>/dev/null \
    || die "$HOST_PY cannot import onnx (run ./install.sh --dev first, or set EDGE_ARM64_PYTHON)"
# An ONNX file is the same on every architecture: generate it here, natively, in a second.
"$HOST_PY" "$REPO/tests/tiny_model.py" "$ROOT/root/tiny.onnx" >/dev/null
model_sha=$(sha256sum "$ROOT/root/tiny.onnx" | cut -d' ' -f1)
phase_done "setup"

# -- install.sh, for real ----------------------------------------------------------------------------
log "install.sh --model /root/tiny.onnx --sha256 ${model_sha:0:12}... (apt, user, venv, pip, config, unit)"
in_root "$SRC/install.sh" --model /root/tiny.onnx --sha256 "$model_sha" >"$WORK/install1.log" 2>&1 \
    || { tail -40 "$WORK/install1.log" >&2; die "install.sh failed"; }
sed 's/^/    | /' "$WORK/install1.log" | tail -25
phase_done "install.sh (first)"

in_root id edge-runtime | grep -q '(video)' || die "user edge-runtime missing or not in group video"
[[ -f $ROOT/etc/edge-runtime/config.yaml ]] || die "no /etc/edge-runtime/config.yaml"
grep -qx 'model: /var/lib/edge-runtime/models/model.onnx' "$ROOT/etc/edge-runtime/config.yaml" \
    || die "the installed config's model: line does not point at /var/lib/edge-runtime/models/model.onnx"
cmp -s "$ROOT/root/tiny.onnx" "$ROOT/var/lib/edge-runtime/models/model.onnx" || die "model not installed"
[[ $(in_root systemctl is-enabled edge-runtime.service) == enabled ]] || die "unit not enabled"
venv_arch=$(in_root /opt/edge-runtime/venv/bin/python -c 'import platform, onnxruntime, cv2, numpy
print(platform.machine(), "onnxruntime", onnxruntime.__version__, "opencv", cv2.__version__, "numpy", numpy.__version__)')
log "venv: $venv_arch"
[[ $venv_arch == aarch64* ]] || die "the venv is not aarch64"

# -- the daemon, as the service would run it ---------------------------------------------------------
# It runs as edge-runtime with the installed config; only the source is overridden (no camera here).
# The notify socket lives in the root's /run, so a listener on the host receives what it sends.
rm -f "$ROOT/run/edge-notify.sock"
"$HOST_PY" "$HERE/check_output.py" listen "$ROOT/run/edge-notify.sock" "$WORK/notify.txt" &
listener=$!
for _ in $(seq 50); do [[ -S $ROOT/run/edge-notify.sock ]] && break; sleep 0.1; done
chmod 0777 "$ROOT/run/edge-notify.sock"
log "daemon: synthetic://320x240, 3 frames, as user edge-runtime"
t=$SECONDS
chroot_env+=(NOTIFY_SOCKET=/run/edge-notify.sock WATCHDOG_USEC=2000000)
rc=0
in_root runuser -u edge-runtime -- /opt/edge-runtime/venv/bin/python -m edge_runtime \
    --config /etc/edge-runtime/config.yaml --source synthetic://320x240 --max-frames 3 \
    >"$WORK/daemon.out" 2>"$WORK/daemon.err" || rc=$?
((rc == 0)) || { cat "$WORK/daemon.err" >&2; die "the daemon exited with $rc"; }
log "daemon ran in $((SECONDS - t)) s"
sed 's/^/    | /' "$WORK/daemon.err" | tail -8
kill "$listener" 2>/dev/null || true
wait "$listener" 2>/dev/null || true
"$HOST_PY" "$HERE/check_output.py" check "$WORK/daemon.out" "$WORK/notify.txt" 3 || die "daemon output"
phase_done "daemon"

# -- under a real systemd: boot the root with systemd-nspawn -------------------------------------------
# The installed unit runs as systemd starts it (Type=notify, the hardening, the user) with a test
# drop-in: the synthetic source and WatchdogSec=6. A checker unit inside waits for READY, lets it
# run past two watchdog periods (pings arrive), freezes it with SIGSTOP (the watchdog must kill and
# restart it), stops it (exit 0), writes what it saw and powers the container off.
if [[ ${EDGE_ARM64_BOOT:-1} == 1 ]]; then
    command -v systemd-nspawn >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd-container >/dev/null
    }
    install -D -m 0644 /dev/stdin "$ROOT/etc/systemd/system/edge-runtime.service.d/arm64-test.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=/opt/edge-runtime/venv/bin/python -m edge_runtime --config /etc/edge-runtime/config.yaml --source synthetic://320x240?fps=5 --stats-interval 5
WatchdogSec=6
BindReadOnlyPaths=/usr/local/share/cpuinfo-rpi5.txt:/proc/cpuinfo
Environment=QEMU_CPU=cortex-a76
UNIT
    install -m 0755 /dev/stdin "$ROOT/usr/local/bin/edge-boot-check" <<'CHECK'
#!/bin/sh
exec >/root/boot-check.txt 2>&1
show() { systemctl show edge-runtime -p ActiveState -p NRestarts -p MainPID -p Result -p StatusText; }
wait_for() { i=0; until eval "$1" || [ $i -ge 180 ]; do sleep 1; i=$((i + 1)); done; echo "(waited ${i}s)"; }
echo "== started"; wait_for '[ "$(systemctl show -p ActiveState --value edge-runtime)" = active ] || [ "$(systemctl show -p NRestarts --value edge-runtime)" != 0 ]'; show
if [ "$(systemctl show -p ActiveState --value edge-runtime)" = active ]; then
sleep 15; echo "== running"; show
pid=$(systemctl show -p MainPID --value edge-runtime); [ "$pid" -gt 1 ] && kill -STOP "$pid"
echo "== hung"; wait_for '[ "$(systemctl show -p NRestarts --value edge-runtime)" = 1 ] && [ "$(systemctl show -p ActiveState --value edge-runtime)" = active ]'; show
systemctl stop edge-runtime; echo "== stopped"; systemctl show edge-runtime -p ActiveState -p Result -p ExecMainStatus
fi
echo "== journal"; journalctl -u edge-runtime --no-pager -o cat
systemctl poweroff
CHECK
    install -m 0644 /dev/stdin "$ROOT/etc/systemd/system/edge-boot-check.service" <<'UNIT'
[Unit]
After=edge-runtime.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/edge-boot-check
UNIT
    ln -sf /etc/systemd/system/edge-boot-check.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}"; done
    MOUNTS=()
    log "booting the root with systemd-nspawn: the unit under systemd $(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${Version}' systemd)"
    # The Pi 5 cpuinfo (pitfall 1 above) must be in the service's own /proc, which systemd mounts
    # afresh for ProtectProc=invisible: the test drop-in binds it there (emulation only).
    install -D -m 0644 "$HERE/cpuinfo-rpi5.txt" "$ROOT/usr/local/share/cpuinfo-rpi5.txt"
    timeout --kill-after=20 600 systemd-nspawn -D "$ROOT" -b --register=no --keep-unit --console=pipe \
        -E QEMU_CPU="$QEMU_CPU" \
        >"$WORK/boot.log" 2>&1 </dev/null || true
    [[ -f $ROOT/root/boot-check.txt ]] || { tail -30 "$WORK/boot.log" >&2; die "the boot check did not run"; }
    result=$ROOT/root/boot-check.txt
    grep -v '^{' "$result" | grep -v '^$' | sed 's/^/    | /' | head -60
    sect() { sed -n "/^== $1/,/^== /p" "$result"; }
    sect started | grep -qx 'ActiveState=active' || die "systemd: the service did not become active (READY=1)"
    if ! sect running | grep -qx 'NRestarts=0' || ! sect running | grep -qx 'ActiveState=active'; then
        die "systemd: the service did not keep running past two watchdog periods"
    fi
    sect hung | grep -qx 'NRestarts=1' || die "systemd: the watchdog did not restart the frozen daemon"
    grep -q 'Watchdog timeout' "$result" || die "systemd: no watchdog timeout in the journal"
    sect stopped | grep -qx 'ExecMainStatus=0' || die "systemd: the daemon did not exit 0 on stop"
    grep -q 'fps' "$result" || die "systemd: no stats in the journal"
    ! grep -q '"type":"prediction"' "$result" || die "systemd: predictions reached the journal unasked"
    rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/edge-boot-check.service"
    rm -rf "$ROOT/etc/systemd/system/edge-runtime.service.d"
    phase_done "systemd boot (notify, watchdog, stop)"
    mnt -t proc proc "$ROOT/proc"
    mnt --bind "$HERE/cpuinfo-rpi5.txt" "$ROOT/proc/cpuinfo"
    mnt -t sysfs sysfs "$ROOT/sys"
    mnt --bind /dev "$ROOT/dev"
    mnt --bind /dev/pts "$ROOT/dev/pts"
fi

# -- re-run (upgrade in place) and uninstall ---------------------------------------------------------
echo "# a local edit that an upgrade must keep" >>"$ROOT/etc/edge-runtime/config.yaml"
in_root "$SRC/install.sh" >"$WORK/install2.log" 2>&1 || { tail -40 "$WORK/install2.log" >&2; die "re-run failed"; }
grep -q 'a local edit that an upgrade must keep' "$ROOT/etc/edge-runtime/config.yaml" \
    || die "re-running install.sh overwrote the config"
cmp -s "$ROOT/root/tiny.onnx" "$ROOT/var/lib/edge-runtime/models/model.onnx" || die "re-run lost the model"
phase_done "install.sh (re-run, upgrade in place)"

in_root /opt/edge-runtime/install.sh --uninstall >"$WORK/uninstall.log" 2>&1 \
    || { tail -40 "$WORK/uninstall.log" >&2; die "--uninstall failed"; }
[[ ! -e $ROOT/opt/edge-runtime && ! -e $ROOT/etc/systemd/system/edge-runtime.service ]] \
    || die "--uninstall left the prefix or the unit behind"
[[ -f $ROOT/etc/edge-runtime/config.yaml && -f $ROOT/var/lib/edge-runtime/models/model.onnx ]] \
    || die "--uninstall removed the config or the model (only --purge may)"
phase_done "install.sh --uninstall"

log "PASSED: install.sh and the daemon on arm64 (total $((SECONDS - T0)) s)"
