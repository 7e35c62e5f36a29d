#!/usr/bin/env bash
# install.sh: install edge-runtime as a systemd service on Raspberry Pi OS (64-bit), Debian, Ubuntu or
# Armbian (arm64 or x86_64), or make a development environment in this checkout (--dev).
# Idempotent: re-running it upgrades in place and never overwrites /etc/edge-runtime/config.yaml.
# Run `./install.sh --help` for the options.
set -euo pipefail

usage() {
    cat <<EOF
Usage: sudo ./install.sh [OPTIONS]        install or upgrade the service
       ./install.sh --dev [--models] [--litert]   development venv in this checkout (no root needed)
       sudo ./install.sh --uninstall [--purge]

Options:
  --prefix DIR        where the program and its virtual environment go (default $DEFAULT_PREFIX)
  --model PATH|URL    install this ONNX model as $MODEL_FILE
                      (a sidecar PATH.yaml next to a file is installed with it). A URL is downloaded
                      and needs --sha256; on a mismatch nothing changes and the old model stays.
                      Without --model, when no model is installed yet: MobileNetV3-Small with
                      torchvision's ImageNet weights (python -m edge_runtime fetch-model; no torch)
  --sha256 HEX        expected SHA-256 of the model (required for a URL, checked for a file too)
  --no-service        do not install or enable the systemd unit (run the daemon yourself)
  --python PYTHON     the Python to build the virtual environment from (default python3; 3.11+)
  --dev               make ./.venv in this checkout with requirements.txt, requirements-dev.txt and
                      the package in editable mode (pip install -e .); no root, nothing system-wide;
                      no PyTorch. A demo model: ImageNet MobileNetV3-Small when the download works,
                      else one with untrained weights (EDGE_NO_DOWNLOAD=1: untrained, no download)
  --models            with --dev: also PyTorch for the tools in models/ (models/requirements.txt; on
                      x86_64 from PyTorch's CPU wheel index when it can be reached)
  --litert            also LiteRT (ai-edge-litert, requirements-litert.txt; ~14 MB), to run .tflite
                      models; with an install or with --dev. Without it a .tflite model is refused
                      with a line saying to re-run with --litert; ONNX models never need it
  --uninstall         stop and remove the service, the unit and the prefix; keep the config
                      ($CONFIG_DIR) and the models ($STATE_DIR) unless --purge
  --purge             with --uninstall: also remove the config, the models and the user
  --dry-run           print every action and change nothing
  -h, --help          this text

What an install does: apt-installs python3-picamera2 on Raspberry Pi OS (--no-install-recommends) and
the venv module where it is missing; creates the system user $SERVICE_USER (group video); creates a
venv in PREFIX/venv (with --system-site-packages on Raspberry Pi OS, for picamera2 and libcamera) and
pip-installs requirements.txt and this package into it; writes $CONFIG_FILE from the
commented default (only if it does not exist; $CONFIG_FILE.default is always refreshed for
comparison); installs $UNIT_DIR/$UNIT and enables it, and (re)starts it when a model is there.

Progress goes to stderr; stdout stays empty (for pipes).
Environment: EDGE_DEV_REQUIREMENTS  requirement files for --dev, relative to the checkout
             (default "requirements.txt requirements-dev.txt", plus models/requirements.txt with --models
             and requirements-litert.txt with --litert).
             EDGE_NO_DOWNLOAD=1  no model download (--dev: untrained demo model; install: none).
Exit status: 0 done, 1 failed (with the reason), 2 bad usage.
EOF
}

# -- constants (the unit file uses the same paths) ---------------------------------------------------
readonly DEFAULT_PREFIX=/opt/edge-runtime
readonly SERVICE_USER=edge-runtime
readonly CONFIG_DIR=/etc/edge-runtime
readonly CONFIG_FILE=$CONFIG_DIR/config.yaml
readonly STATE_DIR=/var/lib/edge-runtime
readonly MODEL_DIR=$STATE_DIR/models
readonly MODEL_FILE=$MODEL_DIR/model.onnx
readonly UNIT=edge-runtime.service
readonly UNIT_DIR=/etc/systemd/system
readonly MARKER=.installed-by-edge-runtime
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SRC_DIR

# Where the platform is read from; tests point these elsewhere to exercise each branch.
OS_RELEASE=${EDGE_OS_RELEASE:-/etc/os-release}
RPI_ISSUE=${EDGE_RPI_ISSUE:-/etc/rpi-issue}
DT_MODEL=${EDGE_DT_MODEL:-/proc/device-tree/model}

# -- options ---------------------------------------------------------------------------------------
PREFIX=$DEFAULT_PREFIX
PREFIX_GIVEN=0
MODEL=""
SHA256=""
SERVICE=1
PYTHON=python3
MODE=install
PURGE=0
MODELS=0
LITERT=0
ORIG_ARGS=("$@")
DRY_RUN=0

usage_error() { printf 'install.sh: %s\n(see ./install.sh --help)\n' "$*" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix=*|--model=*|--sha256=*|--python=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
        --prefix) need_value "$@"; PREFIX=$2; PREFIX_GIVEN=1; shift ;;
        --model) need_value "$@"; MODEL=$2; shift ;;
        --sha256) need_value "$@"; SHA256=$2; shift ;;
        --python) need_value "$@"; PYTHON=$2; shift ;;
        --no-service) SERVICE=0 ;;
        --dev) MODE=dev ;;
        --models) MODELS=1 ;;
        --litert) LITERT=1 ;;
        --uninstall) MODE=uninstall ;;
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage_error "unknown option: $1" ;;
    esac
    shift
done

[[ $PREFIX == /* ]] || usage_error "--prefix must be an absolute path, not '$PREFIX'"
PREFIX=${PREFIX%/}
[[ -n $PREFIX ]] || usage_error "--prefix / is not allowed"
if [[ $PURGE == 1 && $MODE != uninstall ]]; then usage_error "--purge only goes with --uninstall"; fi
if [[ $MODELS == 1 && $MODE != dev ]]; then usage_error "--models only goes with --dev"; fi
if [[ $LITERT == 1 && $MODE == uninstall ]]; then usage_error "--litert goes with an install or --dev"; fi
[[ -z $MODEL || $MODE == install ]] || usage_error "--model only goes with an install"
[[ -z $SHA256 || -n $MODEL ]] || usage_error "--sha256 needs --model"
if [[ -n $SHA256 ]]; then
    SHA256=${SHA256,,}
    [[ $SHA256 =~ ^[0-9a-f]{64}$ ]] || usage_error "--sha256 wants 64 hex digits, got '$SHA256'"
fi
if [[ $MODEL =~ ^[a-zA-Z][a-zA-Z0-9+.-]*:// ]]; then
    [[ $MODEL =~ ^https?:// ]] || usage_error "--model URL must be http:// or https://, got '$MODEL'"
    [[ -n $SHA256 ]] || usage_error "--model URL needs --sha256 HEX (the model's checksum, from sha256sum)"
fi

VENV=$PREFIX/venv

# -- output and actions ----------------------------------------------------------------------------
# Everything goes to stderr: `./install.sh --dev && .venv/bin/python -m edge_runtime ... | jq` must see
# only the daemon's JSON on stdout.
say() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# run CMD...: print it, then run it unless --dry-run (its output, pip's too, on stderr).
run() {
    local quoted
    printf -v quoted '%q ' "$@"
    printf '+ %s\n' "${quoted% }" >&2
    [[ $DRY_RUN == 1 ]] || "$@" >&2
}

# -- checks ----------------------------------------------------------------------------------------
os_field() {   # os_field KEY: a value from os-release, unquoted
    [[ -r $OS_RELEASE ]] || return 0
    sed -n "s/^$1=//p" "$OS_RELEASE" | head -n1 | tr -d '"'"'"
}

board_model() {
    if [[ -r $DT_MODEL ]]; then tr -d '\0' <"$DT_MODEL"; fi
}

is_raspberry_pi_os() {
    local id
    id=$(os_field ID)
    # Raspberry Pi OS says ID=debian (bookworm) or raspbian (32-bit, older). Not Ubuntu: it has no
    # python3-picamera2 package.
    [[ $id == raspbian || $id == debian ]] || return 1
    [[ -e $RPI_ISSUE ]] && return 0
    [[ $(board_model) == *"Raspberry Pi"* ]]
}

check_userland() {
    local arch="" bits
    if command -v dpkg >/dev/null 2>&1; then arch=$(dpkg --print-architecture); fi
    bits=$(getconf LONG_BIT 2>/dev/null || echo 64)
    case $arch in
        armhf|armel|i386)
            die "this is a 32-bit userland (dpkg architecture '$arch', kernel $(uname -m)).
  onnxruntime publishes no wheels for 32-bit Linux, so edge-runtime cannot run here.
  Fix: install a 64-bit OS. On a Raspberry Pi (3, 4, 5, Zero 2 W): flash 'Raspberry Pi OS (64-bit)'
  with Raspberry Pi Imager; \`dpkg --print-architecture\` must then say arm64. On RK3399: an arm64
  Armbian, Debian or Ubuntu image." ;;
    esac
    if [[ $bits == 32 ]]; then
        die "this is a 32-bit userland (getconf LONG_BIT = 32, kernel $(uname -m)).
  onnxruntime publishes no wheels for 32-bit Linux. Fix: install a 64-bit (arm64 or x86_64) OS."
    fi
    case $(uname -m) in
        x86_64|aarch64|arm64) ;;
        *) warn "$(uname -m) is neither x86_64 nor aarch64: pip may find no onnxruntime wheel for it" ;;
    esac
}

PY_VERSION=""
check_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' found.
  Fix: sudo apt-get install python3 python3-venv   (or pass --python /path/to/python3.11)"
    PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die "'$PYTHON' does not run"
    local major=${PY_VERSION%%.*} minor=${PY_VERSION#*.}
    if ((major < 3 || (major == 3 && minor < 11))); then
        die "Python $PY_VERSION ('$PYTHON') is too old: edge-runtime needs Python 3.11 or newer
  (onnxruntime publishes no wheels for older Pythons).
  Fix: use Raspberry Pi OS / Debian 12 (bookworm) or newer, Ubuntu 24.04, or Armbian based on them;
  on Ubuntu 22.04: sudo apt-get install python3.11 python3.11-venv, then re-run with --python python3.11"
    fi
}

# -- apt -------------------------------------------------------------------------------------------
apt_missing=()
apt_want() {   # queue a package for apt-get if dpkg does not have it installed
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            apt_missing+=("$pkg")
        fi
    done
}

apt_install() {
    ((${#apt_missing[@]})) || return 0
    command -v apt-get >/dev/null 2>&1 || die "needs these packages, and there is no apt-get: ${apt_missing[*]}"
    say "apt: installing ${apt_missing[*]}"
    run env DEBIAN_FRONTEND=noninteractive apt-get update -q
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
}

venv_module_ok() { "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; }

# -- venv ------------------------------------------------------------------------------------------
# ensure_venv DIR SYSTEM_SITE(0|1): create it, or re-create it when broken, built from another Python
# version, or with the other --system-site-packages setting.
ensure_venv() {
    local dir=$1 system_site=$2 flag=() reason="" has_site=0
    [[ $system_site == 1 ]] && flag=(--system-site-packages)
    if grep -qx 'include-system-site-packages = true' "$dir/pyvenv.cfg" 2>/dev/null; then has_site=1; fi
    if [[ ! -x $dir/bin/python ]]; then
        reason="new"
    elif ! "$dir/bin/python" -c '' >/dev/null 2>&1; then
        reason="broken"
    elif [[ $("$dir/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') != "$PY_VERSION" ]]; then
        reason="built from another Python"
    elif [[ $has_site != "$system_site" ]]; then
        reason="system-site-packages setting changes"
    fi
    if [[ -z $reason ]]; then
        note "virtual environment $dir is up to date (Python $PY_VERSION)"
        return 0
    fi
    say "virtual environment $dir ($reason)"
    if [[ $reason == new ]]; then
        run "$PYTHON" -m venv "${flag[@]}" "$dir"
    else
        run "$PYTHON" -m venv --clear "${flag[@]}" "$dir"
    fi
}

pip_in() {   # pip_in VENV ARGS...: pip of that venv
    local venv=$1
    shift
    run "$venv/bin/python" -m pip --disable-pip-version-check "$@"
}

# -- the service's pieces ---------------------------------------------------------------------------
ensure_user() {
    local shell=/usr/sbin/nologin
    [[ -x $shell ]] || shell=$(command -v nologin || echo /bin/false)
    getent group video >/dev/null || run groupadd --system video
    if getent passwd "$SERVICE_USER" >/dev/null; then
        if id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
            note "system user $SERVICE_USER exists (group video)"
        else
            run usermod -a -G video "$SERVICE_USER"
        fi
    else
        say "system user $SERVICE_USER (group video, for the cameras)"
        run useradd --system --user-group --groups video --home-dir "$STATE_DIR" --no-create-home \
            --shell "$shell" --comment "edge-runtime daemon" "$SERVICE_USER"
    fi
}

ensure_dirs() {
    say "directories"
    run install -d -m 0755 "$PREFIX"
    run install -d -m 0755 "$CONFIG_DIR"
    run install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE_DIR"
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$MODEL_DIR"
}

# The default config as installed: the model at its installed path, camera 0 instead of the test
# pattern (camera 0 is the Pi camera on a Pi, /dev/video0 elsewhere), and event snapshots on, in the
# state directory (the unit's StateDirectory=, the one place the service may write).
render_config() {
    local default=$SRC_DIR/edge_runtime/data/config.yaml
    printf '# Installed by install.sh from edge_runtime/data/config.yaml. Edit it, then apply with:\n'
    printf '#   sudo systemctl restart edge-runtime\n'
    printf '# Check it first:  sudo -u %s %s/bin/python -m edge_runtime --config %s --validate-config\n\n' \
        "$SERVICE_USER" "$VENV" "$CONFIG_FILE"
    if grep -q '^# camera: 0' "$default"; then
        sed -e "s|^model:.*|model: $MODEL_FILE|" -e 's|^source:|# source:|' -e 's|^# camera: 0|camera: 0|' "$default"
    else
        sed -e "s|^model:.*|model: $MODEL_FILE|" "$default"
    fi | sed -e 's|^# snapshots:$|snapshots:|' -e "s|^#   dir: $STATE_DIR/snapshots\$|  dir: $STATE_DIR/snapshots|"
}

install_config() {
    local default=$SRC_DIR/edge_runtime/data/config.yaml tmp
    [[ -f $default ]] || die "missing $default in this checkout"
    say "config"
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ write %s (the commented default config; model: %s; camera: 0)\n' "$CONFIG_FILE.default" "$MODEL_FILE" >&2
    else
        tmp=$(mktemp "$CONFIG_DIR/.config.yaml.XXXXXX")
        render_config >"$tmp"
        grep -qx "model: $MODEL_FILE" "$tmp" || warn "could not set model: in $CONFIG_FILE.default; set it by hand"
        grep -qx "  dir: $STATE_DIR/snapshots" "$tmp" || warn "could not set snapshots.dir in $CONFIG_FILE.default"
        chown "root:$SERVICE_USER" "$tmp"
        chmod 0640 "$tmp"
        mv -f "$tmp" "$CONFIG_FILE.default"
    fi
    if [[ -e $CONFIG_FILE ]]; then
        note "kept the existing $CONFIG_FILE (the new default is in $CONFIG_FILE.default: diff them)"
    else
        run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_FILE.default" "$CONFIG_FILE"
    fi
}

DOWNLOAD_PY='
import shutil, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
request = urllib.request.Request(url, headers={"User-Agent": "edge-runtime-install"})
try:
    with urllib.request.urlopen(request, timeout=60) as response, open(out, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)
except Exception as exc:
    sys.exit(f"download of {url} failed: {exc}")
'

install_model() {
    [[ -n $MODEL ]] || return 0
    local tmp=$MODEL_DIR/.model.onnx.new actual sidecar="" stem
    say "model -> $MODEL_FILE"
    if [[ $MODEL =~ ^https?:// ]]; then
        run "$PYTHON" -c "$DOWNLOAD_PY" "$MODEL" "$tmp" || { rm -f "$tmp"; die "could not download $MODEL; the old model (if any) is unchanged"; }
    else
        [[ -f $MODEL ]] || die "--model $MODEL: no such file"
        run install -m 0640 "$MODEL" "$tmp"
        # model.onnx -> model.yaml, model.tflite -> model.yaml (a .tflite runs from model.onnx too: the
        # daemon picks the engine by the file's content, not its name)
        stem=${MODEL%.onnx}
        stem=${stem%.tflite}
        [[ -f $stem.yaml ]] && sidecar=$stem.yaml
    fi
    if [[ -n $SHA256 ]]; then
        if [[ $DRY_RUN == 1 ]]; then
            printf '+ sha256sum %s   (must be %s, else stop and keep the old model)\n' "$tmp" "$SHA256" >&2
        else
            actual=$(sha256sum "$tmp" | cut -d' ' -f1)
            if [[ $actual != "$SHA256" ]]; then
                rm -f "$tmp"
                die "model checksum mismatch: expected $SHA256, got $actual. Nothing was changed; the old model (if any) stays."
            fi
            note "sha256 $actual matches"
        fi
    fi
    run chown "root:$SERVICE_USER" "$tmp"
    run chmod 0640 "$tmp"
    run mv -f "$tmp" "$MODEL_FILE"
    if [[ -n $sidecar ]]; then
        run install -m 0640 -o root -g "$SERVICE_USER" "$sidecar" "$MODEL_DIR/model.yaml"
    elif [[ -e $MODEL_DIR/model.yaml ]]; then
        run rm -f "$MODEL_DIR/model.yaml"     # it described the previous model
    fi
}

# No --model and none installed yet: MobileNetV3-Small with torchvision's ImageNet weights, converted
# on this machine without torch (python -m edge_runtime fetch-model; SHA-256 pinned in edge_runtime).
# Offline: say exactly what to do instead; the service is then enabled but not started.
fetch_default_model() {
    [[ -z $MODEL && ! -e $MODEL_FILE ]] || return 0
    local url=https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth
    say "model -> $MODEL_FILE: MobileNetV3-Small, torchvision's ImageNet weights (about 10 MB download)"
    if [[ ${EDGE_NO_DOWNLOAD:-0} == 1 ]]; then
        note "EDGE_NO_DOWNLOAD=1: no download"
    elif run "$VENV/bin/python" -m edge_runtime fetch-model small --output "$MODEL_FILE"; then
        run chown "root:$SERVICE_USER" "$MODEL_FILE"
        run chmod 0640 "$MODEL_FILE"
        return 0
    fi
    warn "no model installed (no internet here?). Either:
  - on a machine with internet: download $url
    (or run: python -m edge_runtime fetch-model small --output model.onnx), copy it here, then
      sudo $VENV/bin/python -m edge_runtime fetch-model small --from FILE.pth --output $MODEL_FILE
    (for a .pth; or: sudo $PREFIX/install.sh --model model.onnx), then: sudo systemctl restart edge-runtime
  - or any ONNX classifier: sudo $PREFIX/install.sh --model FILE_OR_URL [--sha256 HEX]"
}

install_package() {
    local pi=$1 build
    say "Python packages into $VENV"
    pip_in "$VENV" install -r "$SRC_DIR/requirements.txt"
    # LiteRT for .tflite models, only when asked for (the daemon imports it only for a .tflite model).
    if [[ $LITERT == 1 ]]; then pip_in "$VENV" install -r "$SRC_DIR/requirements-litert.txt"; fi
    # Build from a copy, so a (root) build leaves no build/ or *.egg-info in the checkout.
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ %s\n' "$VENV/bin/python -m pip install --no-deps --force-reinstall (a copy of $SRC_DIR: pyproject.toml edge_runtime/)" >&2
    else
        build=$(mktemp -d)
        cp -R "$SRC_DIR/pyproject.toml" "$SRC_DIR/edge_runtime" "$build/"
        pip_in "$VENV" install --no-deps --force-reinstall "$build" \
            || { rm -rf "$build"; die "pip could not install edge-runtime from $SRC_DIR"; }
        rm -rf "$build"
    fi
    if [[ $pi == 1 ]]; then
        # apt's simplejpeg (which picamera2 imports) is built against Debian's numpy 1.x; the venv has
        # numpy 2 (for opencv). PyPI's simplejpeg wheel works with it and shadows apt's in the venv.
        if [[ $DRY_RUN == 1 ]]; then
            printf '+ (if picamera2 does not import in the venv) %s\n' \
                "$VENV/bin/python -m pip install --ignore-installed --no-deps simplejpeg" >&2
        elif ! "$VENV/bin/python" -c 'import picamera2' >/dev/null 2>&1; then
            note "picamera2 does not import in the venv (numpy 1.x/2.x mismatch): simplejpeg from PyPI"
            pip_in "$VENV" install --ignore-installed --no-deps simplejpeg
            "$VENV/bin/python" -c 'import picamera2' \
                || warn "picamera2 still does not import in $VENV: the Pi camera will not work (USB cameras will)"
        fi
    fi
}

systemd_running() { [[ -d /run/systemd/system ]]; }

install_unit() {
    local tmp
    say "systemd unit $UNIT_DIR/$UNIT"
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ install -m 0644 %s %s   (ExecStart under %s)\n' "$SRC_DIR/systemd/$UNIT" "$UNIT_DIR/$UNIT" "$PREFIX" >&2
    else
        tmp=$(mktemp)
        sed "s|$DEFAULT_PREFIX/|$PREFIX/|g" "$SRC_DIR/systemd/$UNIT" >"$tmp"
        install -d -m 0755 "$UNIT_DIR"
        install -m 0644 "$tmp" "$UNIT_DIR/$UNIT"
        rm -f "$tmp"
    fi
    if ! command -v systemctl >/dev/null 2>&1; then
        warn "no systemctl: the unit is installed but not enabled"
        return 0
    fi
    if systemd_running; then run systemctl daemon-reload; fi
    run systemctl enable "$UNIT"
}

# Check the config and the model as the service user (exit 0), as the service will read them.
validate() {
    [[ $DRY_RUN == 0 ]] || { printf '+ runuser -u %s -- %s -m edge_runtime --config %s --validate-config\n' \
        "$SERVICE_USER" "$VENV/bin/python" "$CONFIG_FILE" >&2; return 0; }
    local out
    if out=$(cd "$STATE_DIR" && runuser -u "$SERVICE_USER" -- "$VENV/bin/python" -m edge_runtime \
                 --config "$CONFIG_FILE" --validate-config 2>&1); then
        note "$(tail -n1 <<<"$out")"
        return 0
    fi
    warn "the service's config check failed:"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    printf '%s\n' "  Fix $CONFIG_FILE (or the camera/model), then: sudo systemctl restart edge-runtime" >&2
    return 1
}

start_service() {
    if ! systemd_running; then
        note "systemd is not running here (chroot or container): enabled for the next boot, not started"
        return 0
    fi
    say "(re)starting $UNIT"
    if ! run systemctl restart "$UNIT"; then
        systemctl --no-pager --lines=20 status "$UNIT" >&2 || true
        die "the service did not start; see: journalctl -u edge-runtime -n 50"
    fi
    [[ $DRY_RUN == 1 ]] || note "$(systemctl show -p StatusText --value "$UNIT")"
}

write_marker() {
    local version
    version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC_DIR/edge_runtime/__init__.py")
    run install -m 0755 "$SRC_DIR/install.sh" "$PREFIX/install.sh"
    if [[ $DRY_RUN == 1 ]]; then
        printf '+ write %s\n' "$PREFIX/$MARKER" >&2
    else
        printf 'version=%s\nsource=%s\ninstalled=%s\n' "$version" "$SRC_DIR" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
            >"$PREFIX/$MARKER"
    fi
}

# -- the three modes --------------------------------------------------------------------------------
do_install() {
    local pi=0 platform board
    [[ -f $SRC_DIR/requirements.txt && -f $SRC_DIR/pyproject.toml && -f $SRC_DIR/systemd/$UNIT ]] \
        || die "run install.sh from a checkout of edge-runtime (requirements.txt, pyproject.toml and systemd/ are not beside it)"
    [[ $DRY_RUN == 1 || $(id -u) == 0 ]] \
        || die "installing the service needs root: sudo $0 ${ORIG_ARGS[*]}   (or --dev for a development setup, --dry-run to preview)"
    check_userland
    check_python
    is_raspberry_pi_os && pi=1
    platform=$(os_field PRETTY_NAME)
    board=$(board_model)
    say "platform: ${platform:-unknown OS}, $(uname -m)${board:+, $board}; Python $PY_VERSION ($PYTHON)$([[ $pi == 1 ]] && echo '; Raspberry Pi OS')"
    [[ $DRY_RUN == 1 ]] && say "dry run: printing the actions, changing nothing"

    if [[ $pi == 1 ]]; then apt_want python3-picamera2; fi
    if ! venv_module_ok; then apt_want "python$PY_VERSION-venv"; fi
    apt_install
    [[ $DRY_RUN == 1 ]] || venv_module_ok || die "'$PYTHON -m venv' does not work; install python$PY_VERSION-venv"

    ensure_user
    ensure_dirs
    ensure_venv "$VENV" "$pi"
    install_package "$pi"
    install_model
    fetch_default_model
    install_config
    write_marker
    local have_model=0 valid=1
    # In a dry run a model counts as there when one would be installed or downloaded.
    if [[ -f $MODEL_FILE || ($DRY_RUN == 1 && (-n $MODEL || ${EDGE_NO_DOWNLOAD:-0} != 1)) ]]; then have_model=1; fi
    if ((have_model)); then validate || valid=0; fi
    if [[ $SERVICE == 1 ]]; then
        install_unit
        if ((have_model && valid)); then
            start_service
        elif ((!have_model)); then
            warn "no model at $MODEL_FILE yet: the service is enabled but not started.
  Put one there with: sudo $PREFIX/install.sh --model FILE_OR_URL [--sha256 HEX]   (or copy it, then
  sudo systemctl restart edge-runtime). models/README.md says how to export one."
        fi
    else
        note "--no-service: run it yourself, e.g."
        note "  sudo -u $SERVICE_USER $VENV/bin/python -m edge_runtime --config $CONFIG_FILE"
    fi
    say "done. Config: $CONFIG_FILE   Model: $MODEL_FILE   Program: $PREFIX"
    if [[ $SERVICE == 1 ]]; then
        note "logs:    journalctl -u edge-runtime -f"
        note "status:  systemctl status edge-runtime"
        note "after editing the config: sudo systemctl restart edge-runtime"
    fi
    note "uninstall: sudo $PREFIX/install.sh --uninstall   (--purge also removes config, models, user)"
}

# --dev --models on x86_64: torch from PyTorch's CPU wheel index (~0.2 GB of wheels; PyPI's x86 build
# bundles CUDA, ~5 GB), at the versions models/requirements.txt pins. Falls back to the default index.
readonly TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
install_cpu_torch() {
    local venv=$1 pins
    [[ $(uname -m) == x86_64 ]] || return 0
    pins=$(grep -E '^(torch|torchvision)==' "$SRC_DIR/models/requirements.txt" | tr '\n' ' ')
    [[ -n $pins ]] || return 0
    if [[ $DRY_RUN == 0 ]] && ! "$venv/bin/python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15).close()' "$TORCH_CPU_INDEX" >/dev/null 2>&1; then
        warn "PyTorch's CPU wheel index ($TORCH_CPU_INDEX) cannot be reached: torch comes from the default
  index instead (on x86_64 from PyPI that is the CUDA build, several GB)"
        return 0
    fi
    say "PyTorch (CPU build) from $TORCH_CPU_INDEX: $pins"
    # shellcheck disable=SC2086  # $pins: the requirement words
    pip_in "$venv" install $pins --index-url "$TORCH_CPU_INDEX" \
        || warn "could not install torch from $TORCH_CPU_INDEX: falling back to the default index"
}

do_dev() {
    local pi=0 reqs=() r editable_check default_reqs="requirements.txt requirements-dev.txt"
    local demo=$SRC_DIR/models/mobilenetv3_small.onnx
    check_userland
    check_python
    is_raspberry_pi_os && pi=1
    [[ $DRY_RUN == 1 ]] && say "dry run: printing the actions, changing nothing"
    venv_module_ok || die "'$PYTHON -m venv' does not work. Fix: sudo apt-get install python$PY_VERSION-venv"
    if [[ $pi == 1 ]] && ! dpkg-query -W python3-picamera2 >/dev/null 2>&1; then
        warn "for the Pi camera: sudo apt-get install --no-install-recommends python3-picamera2"
    fi
    ensure_venv "$SRC_DIR/.venv" "$pi"
    [[ $MODELS == 1 ]] && default_reqs+=" models/requirements.txt"
    [[ $LITERT == 1 ]] && default_reqs+=" requirements-litert.txt"
    for r in ${EDGE_DEV_REQUIREMENTS:-$default_reqs}; do
        [[ -f $SRC_DIR/$r ]] || die "missing $SRC_DIR/$r"
        reqs+=(-r "$SRC_DIR/$r")
    done
    if [[ $MODELS == 1 ]]; then install_cpu_torch "$SRC_DIR/.venv"; fi
    say "Python packages into $SRC_DIR/.venv (${EDGE_DEV_REQUIREMENTS:-$default_reqs})"
    pip_in "$SRC_DIR/.venv" install "${reqs[@]}"
    editable_check='
import importlib.metadata, pathlib, sys
importlib.metadata.version("edge-runtime")
import edge_runtime
sys.exit(pathlib.Path(edge_runtime.__file__).resolve().parent != pathlib.Path(sys.argv[1]).resolve() / "edge_runtime")'
    if [[ $DRY_RUN == 0 ]] && "$SRC_DIR/.venv/bin/python" -I -c "$editable_check" "$SRC_DIR" >/dev/null 2>&1; then
        note "edge-runtime is installed in editable mode from $SRC_DIR"
    else
        pip_in "$SRC_DIR/.venv" install --no-deps -e "$SRC_DIR"
    fi
    # A first model, made without torch: torchvision's ImageNet MobileNetV3-Small when the download works
    # (real labels), else the same network with untrained weights (the daemon says so, loudly).
    if [[ -f $demo ]]; then
        note "model: $demo is there (delete it to make a fresh one)"
    else
        say "demo model: models/mobilenetv3_small.onnx"
        if [[ ${EDGE_NO_DOWNLOAD:-0} == 1 ]] \
                || ! run "$SRC_DIR/.venv/bin/python" -m edge_runtime fetch-model small --output "$demo"; then
            [[ ${EDGE_NO_DOWNLOAD:-0} == 1 ]] || warn "no ImageNet weights (offline?): the demo model gets untrained weights
  (its labels mean nothing). Later, with internet: .venv/bin/python -m edge_runtime fetch-model"
            run "$SRC_DIR/.venv/bin/python" -m edge_runtime fetch-model small --untrained --output "$demo"
        fi
    fi
    say "done. Activate it with:  source .venv/bin/activate    Tests:  python -m pytest"
}

do_uninstall() {
    local unit_prefix
    [[ $DRY_RUN == 1 || $(id -u) == 0 ]] || die "uninstalling needs root: sudo $0 --uninstall"
    if [[ $PREFIX_GIVEN == 0 && -f $UNIT_DIR/$UNIT ]]; then
        unit_prefix=$(sed -n 's|^ExecStart=\(/.*\)/venv/bin/python .*|\1|p' "$UNIT_DIR/$UNIT")
        [[ -n $unit_prefix ]] && PREFIX=$unit_prefix
    fi
    [[ $DRY_RUN == 1 ]] && say "dry run: printing the actions, changing nothing"
    say "uninstalling edge-runtime from $PREFIX"
    if [[ -f $UNIT_DIR/$UNIT ]] && command -v systemctl >/dev/null 2>&1; then
        if systemd_running; then
            run systemctl disable --now "$UNIT" || warn "could not stop/disable $UNIT"
        else
            run systemctl disable "$UNIT" || warn "could not disable $UNIT"
        fi
    fi
    [[ -e $UNIT_DIR/$UNIT ]] && run rm -f "$UNIT_DIR/$UNIT"
    if systemd_running; then
        run systemctl daemon-reload
        run systemctl reset-failed "$UNIT" 2>/dev/null || true
    fi
    if [[ -e $PREFIX ]]; then
        [[ -f $PREFIX/$MARKER ]] || die "refusing to delete $PREFIX: it has no $MARKER (not made by install.sh?)"
        run rm -rf "$PREFIX"
    fi
    [[ -e $CONFIG_FILE.default ]] && run rm -f "$CONFIG_FILE.default"
    if [[ $PURGE == 1 ]]; then
        say "purging the config, the models and the user"
        run rm -rf "$UNIT_DIR/$UNIT.d" "$CONFIG_DIR" "$STATE_DIR"
        if getent passwd "$SERVICE_USER" >/dev/null; then run userdel "$SERVICE_USER"; fi
        if getent group "$SERVICE_USER" >/dev/null; then run groupdel "$SERVICE_USER"; fi
    else
        note "kept $CONFIG_DIR (config), $STATE_DIR (models) and the user $SERVICE_USER:"
        note "  sudo ./install.sh --uninstall --purge   removes them too"
    fi
    note "apt packages (python3-picamera2) stay installed: remove them with apt if nothing else needs them"
    say "done"
}

case $MODE in
    install) do_install ;;
    dev) do_dev ;;
    uninstall) do_uninstall ;;
esac
