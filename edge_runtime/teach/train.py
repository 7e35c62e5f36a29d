"""`python -m edge_runtime train`: the user's own classes from DIR/<label>/*.jpg, on the board's CPU.

train() is the library call (the page's Train button can run it in a thread): dataset folder, backbone,
output path, a progress callback and a deadline/cancel check in; a Report out. Every picture goes once
through the daemon's own Preprocessor for the backbone's spec and the backbone cut at its features
(features.py); two heads are scored by stratified k-fold cross-validation (every picture held out once,
so the confusion matrix covers the whole set even at 5 pictures a label) and the better one is fitted on
everything. The output is one ONNX with labels, preprocessing and the report in its metadata: the daemon
runs it with no sidecar. Nothing is written unless everything worked (temp file + os.replace).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge_runtime.engines import spec as ms
from edge_runtime.util import safeio
from edge_runtime.teach.collect import LABEL_PATTERN, UNLABELED
from edge_runtime.util.errors import EXIT_OK, ConfigError, ModelError, UserError
from . import features as feat
from . import head as heads

PROG = "python -m edge_runtime train"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MIN_PER_LABEL = 2
RECOMMENDED_PER_LABEL = 10      # see README: 5 a label already held out >= 97 % on a state task
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGES = 5000            # features in memory: 5000 x 1280 x 8 bytes = 51 MB during the fit
MAX_LABELS = 1000
METADATA_REPORT_KEY = "edge_runtime.train_report"


class TrainError(UserError):
    """The dataset or the backbone cannot be trained on: one line, exit 2."""


class Cancelled(UserError):
    """The caller's cancel check or deadline stopped the training."""


@dataclass(frozen=True)
class Report:
    labels: tuple[str, ...]
    images: dict
    method: str               # the head used: softmax | imprinting
    scores: dict              # cross-validated accuracy of each head
    accuracy: float
    per_class: dict
    confusion: list           # rows: true label, columns: predicted, in `labels` order
    folds: int
    features: str
    feature_dim: int
    backbone: str
    date: str
    backbone_ms_per_image: float
    fit_s: float
    total_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def text(self) -> str:
        lines = [f"{sum(self.images.values())} images, {len(self.labels)} labels; head: {self.method} "
                 f"(cross-validated, {self.folds} folds: " +
                 ", ".join(f"{k} {v:.1%}" for k, v in sorted(self.scores.items())) + ")",
                 f"accuracy {self.accuracy:.1%}"]
        width = max(len(x) for x in self.labels)
        for i, label in enumerate(self.labels):
            lines.append(f"  {label:<{width}}  {self.per_class[label]:6.1%}  ({self.images[label]} images)  "
                         + " ".join(f"{c:4d}" for c in self.confusion[i]))
        lines.append("  (rows: true label; columns: predicted, same order)")
        lines.append(f"backbone {self.backbone_ms_per_image:.1f} ms/image, head fit {self.fit_s * 1000:.0f} ms, "
                     f"total {self.total_s:.1f} s")
        return "\n".join(lines)


def scan(data: str | os.PathLike) -> dict[str, list[Path]]:
    """label -> image files, sorted; `unlabeled/` and hidden entries are not classes."""
    try:
        return _scan(Path(data))
    except OSError as exc:
        raise TrainError(f"--data {data}: cannot list {exc.filename or data}: {exc.strerror or exc}") from None


def _scan(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise TrainError(f"--data {root}: not a folder")
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == UNLABELED or not entry.is_dir():
            continue
        if not LABEL_PATTERN.fullmatch(entry.name):
            # The folder name becomes the label in predictions, MQTT topics and Home Assistant: collect's rule.
            raise TrainError(f"--data {root}: folder {safeio.display_path(entry.name)!s} is not a label name "
                             f"(1 to 64 of A-Z a-z 0-9 _ -): rename it, or move it out of {root}")
        files = sorted(p for p in entry.iterdir()
                       if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        found[entry.name] = files
    if len(found) > MAX_LABELS:
        raise TrainError(f"--data {root}: {len(found)} labels, at most {MAX_LABELS}")
    if len(found) < 2:
        raise TrainError(f"--data {root}: {len(found)} label folder(s) ({', '.join(found) or 'none'}); "
                         f"training needs at least 2 labels, each a folder of pictures")
    few = [f"{k} ({len(v)})" for k, v in found.items() if len(v) < MIN_PER_LABEL]
    if few:
        raise TrainError(f"--data {root}: label {', '.join(few)} has fewer than {MIN_PER_LABEL} images; each "
                         f"label needs at least {MIN_PER_LABEL}, {RECOMMENDED_PER_LABEL}+ recommended")
    total = sum(len(v) for v in found.values())
    if total > MAX_IMAGES:
        raise TrainError(f"--data {root}: {total} images, at most {MAX_IMAGES}")
    return found


def decode(path: Path):
    import cv2
    try:
        data = safeio.read_bytes(path, limit=MAX_IMAGE_BYTES)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise TrainError(f"cannot read image {safeio.display_path(path)}: {why}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TrainError(f"cannot decode image {safeio.display_path(path)} (not a picture OpenCV reads); "
                         f"remove it or move it to {UNLABELED}/")
    return image


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint test index sets, each label spread over them round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.asarray(sorted(f)) for f in folds]


def choose_head(x: np.ndarray, y: np.ndarray, k: int) -> tuple[str, dict, np.ndarray, int]:
    """Cross-validate every head; return the best's name, all scores, its predictions, the fold count."""
    n_folds = int(min(5, np.bincount(y).min()))
    folds = stratified_folds(y, n_folds)
    preds = {name: np.empty_like(y) for name in heads.FITS}
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        for name, fit in heads.FITS.items():
            preds[name][test] = fit(x[train], y[train], k).predict(x[test])
    scores = {name: float(np.mean(p == y)) for name, p in preds.items()}
    # Ties go to imprinting: fewer assumptions, nothing to converge.
    best = max(sorted(scores), key=lambda name: (scores[name], name == "imprinting"))
    return best, scores, preds[best], n_folds


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file created exclusively in the same folder, fsync, os.replace: whole or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _ignored():
            os.unlink(tmp)
        raise


class _ignored:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def refuse_tflite(backbone: str) -> None:
    """A .tflite backbone (LiteRT) cannot be cut at its features and re-saved without TensorFlow: say so
    in one line. Other files go on to the ONNX reader, whose own message names what is wrong."""
    from edge_runtime.engines import detect

    try:
        kind = detect(backbone)
    except ModelError:
        return
    if kind == "litert":
        raise ModelError(backbone, "is a .tflite model; train takes an ONNX backbone (a float ONNX classifier, "
                         "e.g. `python -m edge_runtime fetch-model`'s MobileNetV3); the daemon runs .tflite "
                         "models, but cannot train on them")


def train(data: str | os.PathLike, backbone: str, output: str | os.PathLike, *,
          features: str | None = None, progress: Callable[[int, int], None] | None = None,
          deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
          threads: int = 0) -> Report:
    """Train DIR's labels on `backbone`, write `output`, return the Report. `deadline`: time.monotonic()
    value past which it stops (Cancelled); `cancelled()`: checked between pictures. Raises UserError
    (TrainError, ModelError, ConfigError, Cancelled) with nothing written."""
    import onnxruntime as ort

    from edge_runtime.engines.ort import ort_message, session_options
    from edge_runtime.engines.preprocess import Preprocessor

    start = time.monotonic()
    out = Path(output)
    if not out.parent.is_dir():
        raise TrainError(f"--output {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise TrainError(f"--output {out}: is a folder; name the .onnx file to write")
    found = scan(data)
    if not Path(backbone).is_file():
        raise ModelError(backbone, "file not found")
    refuse_tflite(backbone)
    model = feat.load(backbone)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        spec = ms.resolve(backbone, props, None)
    except ConfigError as exc:
        raise ModelError(backbone, f"its description is invalid: {exc}") from None
    if spec.untrained:
        raise ModelError(backbone, "has untrained weights (fetch-model --untrained): its features mean nothing; "
                         "use a pretrained backbone, e.g. fetch-model's ImageNet weights")
    feat.refuse_quantised(model, backbone)
    if spec.input.dtype != "float32":
        raise ModelError(backbone, "takes uint8 input (a quantised model); train on a float backbone")
    tensor = features or feat.find_features(model, backbone)
    cut = feat.cut(model, tensor, backbone)
    try:
        session = ort.InferenceSession(cut.SerializeToString(), sess_options=session_options(threads, spinning=False),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:
        why = ort_message(exc)[:200]
        raise ModelError(backbone, f"onnxruntime cannot run it cut at '{tensor}': {why}") from None
    labels = tuple(found)
    pre = Preprocessor(spec.input)
    buf = pre.new_buffer()
    paths = [(i, p) for i, label in enumerate(labels) for p in found[label]]
    rows, ys = [], []
    infer_s = 0.0
    for n, (label_index, path) in enumerate(paths):
        if (cancelled is not None and cancelled()) or (deadline is not None and time.monotonic() > deadline):
            raise Cancelled(f"training stopped after {n} of {len(paths)} images (cancelled or past its deadline)")
        tensor_in = pre(decode(path), buf)
        t0 = time.perf_counter()
        vec = session.run(None, {session.get_inputs()[0].name: tensor_in})[0]
        infer_s += time.perf_counter() - t0
        rows.append(np.asarray(vec[0], dtype=np.float64))
        ys.append(label_index)
        if progress is not None:
            progress(n + 1, len(paths))
    x = np.stack(rows)
    y = np.asarray(ys)
    if not np.isfinite(x).all():
        raise ModelError(backbone, f"its features at '{tensor}' are not finite numbers")
    k = len(labels)
    t0 = time.perf_counter()
    with heads.one_blas_thread():
        method, scores, cv_pred, n_folds = choose_head(x, y, k)
        final = heads.FITS[method](x, y, k)
    fit_s = time.perf_counter() - t0
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, cv_pred), 1)
    per_class = {label: float(confusion[i, i] / confusion[i].sum()) for i, label in enumerate(labels)}
    report = Report(labels=labels, images={label: len(found[label]) for label in labels}, method=method,
                    scores=scores, accuracy=scores[method], per_class=per_class, confusion=confusion.tolist(),
                    folds=n_folds, features=tensor, feature_dim=int(x.shape[1]),
                    backbone=safeio.display_path(backbone),
                    date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    backbone_ms_per_image=1000 * infer_s / len(paths), fit_s=fit_s,
                    total_s=time.monotonic() - start)
    taught = feat.with_head(cut, final.weight, final.bias, normalise=final.normalise, batch=feat.batch_dim(model))
    new_spec = ms.ModelSpec(input=spec.input, labels=labels, label_offset=0, output="probabilities",
                            output_scale=None, origin="train")
    base = spec.info_dict
    info = {"arch": f"{base.get('arch', Path(backbone).stem)} + {method} head",
            "weights": f"taught by edge_runtime train on {len(paths)} images ({method} head, cross-validated "
                       f"accuracy {report.accuracy:.1%}); backbone {base.get('weights', Path(backbone).name)}",
            "exporter": "edge_runtime.teach"}
    for key, value in new_spec.to_metadata(**info).items():
        taught.metadata_props.add(key=key, value=value)
    taught.metadata_props.add(key=METADATA_REPORT_KEY, value=report.to_json())
    try:
        atomic_write(out, taught.SerializeToString())
    except OSError as exc:
        raise TrainError(f"--output {out}: cannot write it: {exc.strerror or exc}") from None
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(
        "Train your own labels on the board's CPU, without PyTorch: a linear head on a pretrained backbone's "
        f"features. DIR holds one folder of pictures per label (collect's layout; {UNLABELED}/ is ignored); "
        f"each label needs at least {MIN_PER_LABEL}, {RECOMMENDED_PER_LABEL} or more recommended."))
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--backbone", required=True, metavar="MODEL", help="a float ONNX classifier the daemon runs")
    p.add_argument("--output", required=True, metavar="OUT.onnx", help="written atomically, only on success")
    p.add_argument("--features", metavar="TENSOR", help="cut here instead of at the last weighted layer's input")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: all cores)")
    return p


_bar_open = [False]


def _bar(done: int, total: int) -> None:
    width = 30
    _bar_open[0] = done < total
    filled = width * done // total
    sys.stderr.write(f"\rfeatures [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = train(args.data, args.backbone, args.output, features=args.features,
                       progress=_bar if sys.stderr.isatty() else None, threads=args.threads)
    except UserError as exc:
        if _bar_open[0]:
            sys.stderr.write("\n")      # end the half-drawn progress line before the error
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted, nothing written", file=sys.stderr)
        return 130
    print(report.text())
    print(f"wrote {args.output}")
    return EXIT_OK
