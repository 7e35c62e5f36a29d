"""`python -m edge_runtime fetch-model`: a real MobileNetV3 on the device, without PyTorch.

Downloads torchvision's ImageNet weights (SHA-256 pinned here), reads the .pth without running its
pickle (modelzoo/pth.py), builds the ONNX graph from the architecture tables (modelzoo/), checks it
with onnx.checker and onnxruntime, and only then moves it into place. The file describes itself
(labels, preprocessing) like models/export.py's. --from takes a local .pth or a mirror's URL instead
(offline boards, your own fine-tuned weights); --untrained makes the demo model with torchvision's
initialisation, no download.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from dataclasses import dataclass
from typing import Sequence

from edge_runtime import __version__
from edge_runtime.config import DEFAULT_MODEL
from edge_runtime.util.argtypes import number_between
from edge_runtime.util.errors import EXIT_OK, UserError
from edge_runtime.util.redact import redact
from edge_runtime.util.safewrite import create_exclusive
from edge_runtime.util.schema import between, field, length, one_of

DOWNLOAD_TIMEOUT_S = 60         # per blocking socket operation, not for the whole file
DEFAULT_DEADLINE_S = 600        # the whole download (--timeout): a server trickling a byte a second ends
MAX_REDIRECTS = 5
MAX_DOWNLOAD_BYTES = 256 << 20  # a --from URL of unknown size
CHUNK = 1 << 20
PROG = "fetch-model"


class FetchError(UserError):
    """One line, exit 2; nothing was written."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from edge_runtime.modelzoo.mobilenetv3_arch import IMAGENET_WEIGHTS

    small = IMAGENET_WEIGHTS["mobilenet_v3_small"]
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime fetch-model",
        description="Make a MobileNetV3 ONNX model for the daemon without PyTorch: torchvision's ImageNet "
                    "weights (downloaded, SHA-256 checked), a local .pth, or untrained weights.",
        epilog=f"Default download for small: {small.url} ({small.size / 1e6:.1f} MB). Offline: fetch that file on "
               "another machine, copy it over, then --from FILE.pth. Exit codes: 0 written, 2 nothing written "
               "(the line says why).")
    p.add_argument("arch", nargs="?", choices=("small", "large"), default="small",
                   help="MobileNetV3 variant (default small)")
    p.add_argument("--output", type=Path, metavar="PATH",
                   help=f"where the .onnx goes (default {DEFAULT_MODEL} for small, models/mobilenetv3_large.onnx "
                        "for large)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="source", metavar="PATH|URL",
                     help="a .pth state dict in torchvision's layout (a file, or an http(s) URL) instead of "
                          "torchvision's download")
    src.add_argument("--untrained", action="store_true",
                     help="no weights: torchvision's random initialisation (the daemon marks it untrained); "
                          "no download")
    p.add_argument("--sha256", metavar="HEX",
                   help="expected SHA-256 of the --from file (a URL without it must be a copy of torchvision's "
                        "file, whose digest is pinned)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="class names, one per line (default: a checkpoint's own, else ImageNet's for 1000 classes)")
    p.add_argument("--seed", type=int, default=0, help="seed for --untrained (default 0)")
    p.add_argument("--timeout", type=number_between(1, 86400, "seconds"), default=DEFAULT_DEADLINE_S, metavar="SECONDS",
                   help=f"give up a download that has not finished after this long, headers and redirects "
                        f"included (default {DEFAULT_DEADLINE_S}); a silent server is given up after "
                        f"{DOWNLOAD_TIMEOUT_S} s")
    args = p.parse_args(argv)
    if args.sha256 is not None:
        if args.source is None:
            p.error("--sha256 goes with --from")
        args.sha256 = args.sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", args.sha256):
            p.error(f"--sha256 wants 64 hex digits, got {args.sha256!r}")
    if args.source and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", args.source) \
            and not re.match(r"^https?://", args.source):
        p.error(f"--from URL must be http:// or https://, got {redact(args.source)!r}")
    return args



class _Redirects(urllib.request.HTTPRedirectHandler):
    """At most MAX_REDIRECTS, to http(s) only (urllib follows ftp:// too), each refusal one line."""

    max_redirections = MAX_REDIRECTS

    def http_error_302(self, req, fp, code, msg, headers):
        from urllib.parse import urljoin

        target = headers.get("location") or headers.get("uri")
        if target is not None:
            newurl = urljoin(req.full_url, target)
            if not re.match(r"^https?://", newurl, re.I):
                raise FetchError(f"{redact(req.full_url)} redirects to {_one_line(newurl)[:200]}, which is not "
                                 "http(s)://; nothing written")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _one_line(text: object) -> str:
    from edge_runtime.util.redact import one_line
    return one_line(redact(str(text)), limit=300)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, *, max_bytes: int, expected_size: int | None = None,
             deadline_s: float = DEFAULT_DEADLINE_S) -> str:
    """Stream `url` into `dest` (bounded in bytes and in time), return its SHA-256. FetchError (one line)
    on any failure, truncation or the deadline. The transfer runs in a thread of its own, so the deadline
    holds for every step (the connection, headers trickled a byte at a time, redirects, the body)."""
    import threading

    result: dict = {}
    stop = threading.Event()
    t0 = time.monotonic()
    worker = threading.Thread(target=_transfer, args=(url, dest, max_bytes, expected_size, t0 + deadline_s, stop,
                                                      result), name="fetch-model download", daemon=True)
    worker.start()
    worker.join(deadline_s + 1.0)
    if worker.is_alive():
        stop.set()
        raise FetchError(f"download of {redact(url)} did not finish within {deadline_s:g} s (--timeout; "
                         f"{result.get('received', 0)} bytes received); nothing written")
    if "error" in result:
        raise result["error"]
    return result["digest"]


def _transfer(url: str, dest: Path, max_bytes: int, expected_size: int | None, deadline: float,
              stop, result: dict) -> None:
    try:
        result["digest"] = _download(url, dest, max_bytes, expected_size, deadline, stop, result)
    except FetchError as exc:
        result["error"] = exc
    except BaseException as exc:        # whatever it was: one line in the main thread
        result["error"] = FetchError(f"download of {redact(url)} failed ({type(exc).__name__}: {_one_line(exc)}); "
                                     "nothing written")


def _download(url: str, dest: Path, max_bytes: int, expected_size: int | None, deadline: float, stop,
              result: dict) -> str:
    shown = redact(url)                 # a mirror's URL may carry a token
    request = urllib.request.Request(url, headers={"User-Agent": f"edge-runtime/{__version__}"})
    opener = urllib.request.build_opener(_Redirects())
    digest = hashlib.sha256()
    received = 0
    try:
        timeout = max(1.0, min(DOWNLOAD_TIMEOUT_S, deadline - time.monotonic()))
        with opener.open(request, timeout=timeout) as response, dest.open("wb") as out:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            if announced is not None and announced > max_bytes:
                raise FetchError(f"{shown} is {announced} bytes, more than the {max_bytes} expected; nothing written")
            print(f"{PROG}: downloading {shown}" + (f" ({announced / 1e6:.1f} MB)" if announced else ""),
                  file=sys.stderr)
            # read1: whatever one receive brings, so a trickle is seen against the deadline between reads
            while chunk := response.read1(CHUNK):
                received += len(chunk)
                result["received"] = received
                if received > max_bytes:
                    raise FetchError(f"{shown} sends more than the {max_bytes} bytes expected; nothing written")
                if stop.is_set() or time.monotonic() > deadline:
                    raise FetchError(f"download of {shown} did not finish in time; nothing written")
                digest.update(chunk)
                out.write(chunk)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:       # urllib's own text for a loop is three lines
            raise FetchError(f"cannot download {shown}: more than {MAX_REDIRECTS} redirects, or a redirect loop "
                             f"(HTTP {exc.code}); nothing written") from None
        raise FetchError(f"cannot download {shown}: HTTP {exc.code} {_one_line(exc.reason)}; nothing written") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"cannot download {shown} ({_one_line(reason)}); nothing written. Offline? Fetch the file on "
                         f"another machine, copy it here, then: python -m edge_runtime fetch-model --from FILE.pth") \
            from None
    except Exception as exc:            # http.client.IncompleteRead and the like: a cut connection
        raise FetchError(f"download of {shown} broke off after {received} bytes ({type(exc).__name__}); "
                         "nothing written") from None
    want = announced if announced is not None else expected_size
    if want is not None and received != want:
        raise FetchError(f"download of {shown} is truncated: {received} of {want} bytes; nothing written")
    return digest.hexdigest()


# What a models/distill.py checkpoint may say about itself, validated like a config (util/schema.py): a
# width_mult of "abc" or [], an input_size of [-5, -5] or ["a", "b"] is one line, exit 2. Other entries
# (epoch, val_acc, ...) are not read, so not checked.
MIN_WIDTH_MULT, MAX_WIDTH_MULT = 0.1, 4.0
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024       # MobileNetV3's stride is 32; verify() runs it at that size


@dataclass(frozen=True)
class CheckpointInfo:
    format: str | None = field(None)
    arch: str | None = field(None, check=one_of("mobilenet_v3_small", "mobilenet_v3_large"))
    width_mult: float | None = field(None, check=between(MIN_WIDTH_MULT, MAX_WIDTH_MULT))
    input_size: tuple[int, ...] | None = field(None, check=length(2, between(MIN_INPUT_SIZE, MAX_INPUT_SIZE)))
    classes: tuple[str, ...] | None = field(None, check=lambda v: None if len(v) >= 1 and all(
        0 < len(c) <= 1000 for c in v) else "expected class names of 1 to 1000 characters")


def checkpoint_info(extra: dict, source: str) -> CheckpointInfo:
    from edge_runtime.util import schema
    from edge_runtime.util.errors import ConfigError

    known = {f for f in CheckpointInfo.__dataclass_fields__}
    try:
        return schema.build(CheckpointInfo, {k: v for k, v in extra.items() if k in known},
                            file=f"{source} (checkpoint)")
    except ConfigError as exc:
        raise FetchError(f"{exc}; nothing written") from None


def _labels(path: Path | None, info: CheckpointInfo, num_classes: int) -> tuple[str, ...] | None:
    from edge_runtime.engines import spec as ms
    from edge_runtime.util.errors import ConfigError

    if path is not None:
        try:
            labels = ms.read_labels(path)
        except ConfigError as exc:
            raise FetchError(str(exc)) from None
        if len(labels) != num_classes:
            raise FetchError(f"--labels {path} has {len(labels)} names but the weights have {num_classes} classes")
        return labels
    classes = info.classes
    if classes is not None and len(classes) == num_classes:
        return classes
    if num_classes == 1000:
        return ms.read_labels(ms.DEFAULT_LABELS_FILE)
    return None


def make_model(args: argparse.Namespace, workdir: Path):
    """(ONNX ModelProto, one-line description of the weights, whether the classes have no names)."""
    import numpy as np

    from edge_runtime.modelzoo import mobilenetv3_arch as arch_tables
    from edge_runtime.modelzoo import mobilenetv3_onnx as builder
    from edge_runtime.modelzoo import pth

    arch = arch_tables.arch_name(args.arch)
    pinned = arch_tables.IMAGENET_WEIGHTS[arch]
    info = CheckpointInfo()
    if args.untrained:
        net = arch_tables.network(arch)
        # torchvision's init leaves an untrained network's logits at ~1e-9 (each depthwise layer shrinks
        # them): BatchNorm statistics measured on synthetic images keep its answers frame-dependent.
        state = builder.random_state_dict(net, args.seed)
        state = builder.calibrate_batchnorm(state, net, builder.synthetic_images(8, (112, 112), args.seed))
        weights = f"untrained (random init, seed {args.seed}; BatchNorm statistics from synthetic images)"
    else:
        if args.source is None or re.match(r"^https?://", args.source):
            url = args.source or pinned.url
            expected = args.sha256 or pinned.sha256
            path = workdir / "weights.pth"
            size = None if args.sha256 else pinned.size
            actual = download(url, path, max_bytes=size + (1 << 16) if size else MAX_DOWNLOAD_BYTES,
                              expected_size=size, deadline_s=args.timeout)
            source = redact(url)
        else:
            path = Path(args.source)
            if not path.is_file():
                raise FetchError(f"--from {path}: no such file")
            expected = args.sha256
            actual = sha256_file(path)
            source = str(path.resolve())
        if expected is not None and actual != expected:
            raise FetchError(f"{source}: SHA-256 mismatch: expected {expected}, got {actual}; nothing written")
        try:
            state, extra = pth.load_state_dict(path)
        except pth.PthError as exc:
            raise FetchError(f"{source}: {exc}; nothing written") from None
        info = checkpoint_info(extra, source)
        recorded = info.arch
        if recorded is not None and recorded != arch:
            raise FetchError(f"{source} holds a {recorded}, not {arch}: pass {recorded.rsplit('_', 1)[-1]}")
        head = state.get("classifier.3.weight")
        num_classes = int(head.shape[0]) if isinstance(head, np.ndarray) and head.ndim == 2 else 1000
        try:
            net = arch_tables.network(arch, num_classes, info.width_mult or 1.0)
        except ValueError as exc:
            raise FetchError(f"{source}: {exc}; nothing written") from None
        weights = (arch_tables.IMAGENET_WEIGHTS_NAME if actual == pinned.sha256
                   else f"{source} (sha256 {actual[:16]})")
    labels = _labels(args.labels, info, net.num_classes)
    input_size = info.input_size or (224, 224)
    import onnx

    spec = builder.eval_spec(input_size, labels, origin="edge_runtime fetch-model")
    meta = {"arch": arch, "weights": weights, "exporter": f"edge_runtime fetch-model {__version__}",
            "width_mult": f"{info.width_mult or 1.0:g}", "onnx": onnx.__version__, "input_fused": "no"}
    try:
        return builder.build(state, net, spec, meta), weights, labels is None
    except builder.WeightsError as exc:
        raise FetchError(f"{redact(str(args.source))}: {exc}; nothing written") from None


def verify(model, path: Path) -> None:
    """onnx.checker, then onnxruntime on two synthetic images: the right shape, finite logits."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edge_runtime.modelzoo.mobilenetv3_onnx import INPUT_NAME, synthetic_images

    onnx.checker.check_model(model, full_check=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    logits = session.run(None, {INPUT_NAME: synthetic_images(2, (shape[2], shape[3]), seed=1)})[0]
    classes = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if logits.shape != (2, classes) or not np.all(np.isfinite(logits)):
        raise RuntimeError(f"onnxruntime gives logits of shape {logits.shape} (finite: {np.isfinite(logits).all()})")


def run(args: argparse.Namespace) -> int:
    import onnx  # noqa: F401  (without onnx: main's one line, before any download)

    output: Path = args.output or Path(DEFAULT_MODEL if args.arch == "small" else "models/mobilenetv3_large.onnx")
    if output.suffix != ".onnx":
        raise FetchError(f"--output {output}: expected a file name ending in .onnx")
    if output.is_dir():
        raise FetchError(f"--output {output} is a folder")
    made = [d for d in (output.parent, *output.parent.parents) if not d.exists()]   # deepest first
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(made)
        raise FetchError(f"--output {output}: cannot make its folder ({exc.strerror or exc})") from None
    try:
        return _run(args, output)
    except BaseException:
        _remove_empty(made)             # a failed run leaves no folder it made behind
        raise


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()              # only if empty: never anything someone else put there
        except OSError:
            pass


def _run(args: argparse.Namespace, output: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="edge-fetch-") as work:
        model, weights, unlabelled = make_model(args, Path(work))
        tmp = None
        try:
            # A random name, created exclusively (O_EXCL|O_NOFOLLOW): a link planted at a predictable
            # temporary name cannot make this write overwrite another file (util/safewrite.py).
            fd, name = create_exclusive(output.parent, f".{output.name}.", ".tmp")
            tmp = output.parent / name
            with os.fdopen(fd, "wb") as f:
                f.write(model.SerializeToString())
            try:
                verify(model, tmp)
            except Exception as exc:
                raise FetchError(f"the model built for {output} fails its check ({type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                                 "nothing written") from None
            os.replace(tmp, output)          # atomic: the old model stays until the new one is whole
            tmp = None
        except OSError as exc:
            raise FetchError(f"cannot write {output} ({exc.strerror or exc}); nothing written") from None
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    print(f"{PROG}: wrote {output} ({output.stat().st_size / 1e6:.1f} MB): {model.graph.name}, {weights}",
          file=sys.stderr)
    if unlabelled:
        print(f"{PROG}: note: no labels for these classes (--labels FILE); the daemon calls them class_0, ...",
              file=sys.stderr)
    if weights.startswith("untrained"):
        print(f"{PROG}: warning: untrained weights: the predictions change with the frame but mean nothing",
              file=sys.stderr)
    print(output)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    except ImportError as exc:
        print(f"{PROG}: error: {exc} (pip install onnx: fetch-model needs it)", file=sys.stderr)
        return 2
