"""Fine-tune MobileNetV3-Small for your own classes, taught by MobileNetV3-Large, and export it to ONNX.

    python models/distill.py --data DIR --output MODEL.onnx [--epochs N] [--teacher CKPT]
                             [--alpha A] [--temperature T]

DIR holds one sub-folder per class, as `python -m edge_runtime collect` makes it (DIR/unlabeled/ is
ignored); each class needs at least 1/--val-split images (5 at 0.2). Recipe: split DIR into train/val
(stratified); fine-tune the Large teacher on the labels (or load it from --teacher); then train the Small student with
    loss = alpha * CE(student, label) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))
keeping the epoch with the best validation accuracy; export it with the class names as labels, and
print the exported file's per-class accuracy and confusion matrix on the held-out (validation) split.
Checkpoints: MODEL.teacher.pth (reusable with --teacher) and MODEL.pth (the best student).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):          # run as `python models/distill.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from models.common import ToolError, positive_int, run_main, tool_name  # noqa: E402
from edge_runtime.teach.collect import UNLABELED  # noqa: E402  (where `collect --unlabeled` saves)

DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 2.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="distill.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True,
                   help="image folder, one sub-folder per class (a sub-folder 'unlabeled' is ignored)")
    p.add_argument("--output", type=Path, required=True, help="the student's ONNX file")
    p.add_argument("--epochs", type=positive_int, default=30, help="student epochs (default 30)")
    p.add_argument("--teacher", type=Path, metavar="CKPT",
                   help="a fine-tuned MobileNetV3-Large checkpoint (e.g. an earlier MODEL.teacher.pth); "
                        "default: fine-tune one first")
    p.add_argument("--teacher-epochs", type=positive_int, default=15, help="teacher fine-tuning epochs (default 15)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"weight of the hard-label loss; 1 - alpha goes to the teacher (default {DEFAULT_ALPHA})")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"softmax temperature T (default {DEFAULT_TEMPERATURE:g})")
    p.add_argument("--init", choices=("imagenet", "random"), default="imagenet",
                   help="starting weights of both networks: torchvision's ImageNet checkpoints (downloaded once, "
                        "hash-checked) or random init (default imagenet)")
    p.add_argument("--input-size", type=positive_int, default=224, help="square training/export size (default 224)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    p.add_argument("--val-split", type=float, default=0.2, help="fraction of each class held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default min(4, cores))")
    p.add_argument("--threads", type=positive_int, help="PyTorch CPU threads (default: PyTorch's choice)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of the export (default 17)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log files)")
    args = p.parse_args(argv)
    if not 0 <= args.alpha <= 1:
        p.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.temperature <= 0:
        p.error(f"--temperature must be > 0, got {args.temperature}")
    if not 0 < args.val_split < 1:
        p.error(f"--val-split must be between 0 and 1, got {args.val_split}")
    if args.lr <= 0 or args.weight_decay < 0:
        p.error("--lr must be > 0 and --weight-decay >= 0")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    from models.common import MAX_OPSET, MIN_OPSET

    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        p.error(f"--opset must be {MIN_OPSET}..{MAX_OPSET}, got {args.opset}")
    if args.output.suffix != ".onnx":
        p.error(f"--output {args.output}: expected a file name ending in .onnx")
    return args


def new_network(arch: str, num_classes: int, init: str):
    """MobileNetV3 for `num_classes`, from ImageNet weights (new classifier layer) or random init."""
    from models import checkpoint
    from models.mobilenetv3 import IMAGENET_WEIGHTS_NAME, build

    model = build(arch, num_classes=1000 if init == "imagenet" else num_classes)
    if init == "imagenet":
        checkpoint.load_into(model, checkpoint.imagenet_state_dict(arch), IMAGENET_WEIGHTS_NAME)
        model.reset_classifier(num_classes)
    return model


def load_teacher(path: Path, classes: list[str]):
    from models import checkpoint
    from models.mobilenetv3 import build

    ckpt = checkpoint.load(path)
    if ckpt.arch not in (None, "mobilenet_v3_large"):
        raise ToolError(f"--teacher {path} is a {ckpt.arch}; the teacher is a mobilenet_v3_large")
    if ckpt.classes is not None and list(ckpt.classes) != classes:
        raise ToolError(f"--teacher {path} was trained on classes {ckpt.classes}, but --data has {classes}")
    model = build("mobilenet_v3_large", num_classes=len(classes), width_mult=ckpt.width_mult or 1.0)
    checkpoint.load_into(model, ckpt.state_dict, str(path))
    return model


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)      # before torch: --help and usage errors at once
    import torch

    from models import checkpoint, exporting
    from models.imagefolder import class_folders
    from models.training import evaluate, fit, kd_loss, loader, split_samples

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classes, samples = class_folders(args.data, ignore=(UNLABELED,))
    note_unlabeled(args.data)
    train_samples, val_samples = split_samples(samples, args.val_split, args.seed, classes)
    size = (args.input_size, args.input_size)
    spec = exporting.make_spec(size, tuple(classes))       # also what the runtime will do at inference
    print(f"{len(classes)} classes ({', '.join(classes)}): {len(train_samples)} training, "
          f"{len(val_samples)} validation images; input {size[0]}x{size[1]}, init {args.init}")
    train_data = loader(train_samples, spec.input, train=True, batch_size=args.batch_size,
                        workers=args.workers, seed=args.seed)
    val_data = loader(val_samples, spec.input, train=False, batch_size=args.batch_size,
                      workers=args.workers, seed=args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    student_ckpt = args.output.with_suffix(".pth")
    teacher_ckpt = args.output.with_suffix(".teacher.pth")
    common = dict(lr=args.lr, weight_decay=args.weight_decay, progress=not args.no_progress)

    # 1. The teacher: fine-tuned on the hard labels, or given.
    if args.teacher:
        teacher = load_teacher(args.teacher, classes)
        teacher_acc, _ = evaluate(teacher, val_data)
        print(f"teacher {args.teacher}: val acc {teacher_acc:.3f}")
    else:
        teacher = new_network("mobilenet_v3_large", len(classes), args.init)

        def save_teacher(model, epoch, acc):
            checkpoint.save(teacher_ckpt, model, arch="mobilenet_v3_large", width_mult=1.0, classes=classes,
                            input_size=size, epoch=epoch, val_acc=acc, init=args.init)

        result = fit(teacher, train_data, val_data, epochs=args.teacher_epochs, **common,
                     loss_fn=lambda logits, _x, y: torch.nn.functional.cross_entropy(logits, y),
                     name="teacher", on_best=save_teacher)
        teacher_acc = result.best_acc
        print(f"teacher: best val acc {teacher_acc:.3f} (epoch {result.best_epoch}) -> {teacher_ckpt}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    # 2. The student, taught by the teacher's softened outputs on the same augmented batches.
    student = new_network("mobilenet_v3_small", len(classes), args.init)

    def distill_loss(logits, x, y):
        with torch.no_grad():
            soft_targets = teacher(x)
        return kd_loss(logits, soft_targets, y, args.alpha, args.temperature)

    def save_student(model, epoch, acc):
        checkpoint.save(student_ckpt, model, arch="mobilenet_v3_small", width_mult=1.0, classes=classes,
                        input_size=size, epoch=epoch, val_acc=acc, init=args.init, teacher_val_acc=teacher_acc,
                        alpha=args.alpha, temperature=args.temperature)

    result = fit(student, train_data, val_data, epochs=args.epochs, **common, loss_fn=distill_loss,
                 name="student", on_best=save_student)
    print(f"student: best val acc {result.best_acc:.3f} (epoch {result.best_epoch}) -> {student_ckpt}")

    # 3. Export the best student with the class names as labels, check it, and measure the file itself.
    student.eval()
    info = {"arch": "mobilenet_v3_small", "exporter": tool_name("distill.py"), "width_mult": "1",
            "torch": torch.__version__, "input_fused": "no",
            "weights": (f"{student_ckpt.resolve()} (distilled from mobilenet_v3_large on {args.data.resolve()}, "
                        f"init {args.init}, alpha {args.alpha:g}, T {args.temperature:g}; best val acc "
                        f"{result.best_acc:.3f} at epoch {result.best_epoch})")}
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    try:
        exporting.export_onnx(student, spec, tmp, info=info, opset=args.opset)
        parity = exporting.verify_onnx(tmp, student, spec)
        tmp.replace(args.output)
    finally:
        tmp.unlink(missing_ok=True)
    predicted = onnx_predictions(args.output, val_samples, spec)
    matrix = confusion_matrix([label for _, label in val_samples], predicted, len(classes))
    onnx_acc = sum(matrix[i][i] for i in range(len(classes))) / len(val_samples)
    worst = max(p.max_abs_diff for p in parity.values())
    print(f"exported {args.output}: onnxruntime vs PyTorch max abs diff {worst:.2e}; "
          f"val acc through the runtime's preprocessing and onnxruntime {onnx_acc:.3f} "
          f"(teacher {teacher_acc:.3f}, chance {1 / len(classes):.3f})")
    print(format_report(classes, matrix))
    return 0


def note_unlabeled(data: Path) -> None:
    """`collect --unlabeled` images are no class: say that they are left out, and how many."""
    from models.imagefolder import is_image

    unlabeled = data / UNLABELED
    if unlabeled.is_dir():
        count = sum(1 for p in unlabeled.rglob("*") if is_image(p))
        print(f"note: ignoring {unlabeled} ({count} images): not a class; move its images into class folders "
              "to train on them")


def onnx_predictions(path: Path, samples, spec) -> list[int]:
    """The exported file's top-1 class for each sample, fed exactly as the daemon feeds it."""
    from models.common import ort_session
    from models.imagefolder import preprocessed

    session = ort_session(path)
    name = session.get_inputs()[0].name
    return [int(session.run(None, {name: x})[0].argmax()) for x in preprocessed([p for p, _ in samples], spec.input)]


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], n: int) -> list[list[int]]:
    """matrix[true class][predicted class] = how many images."""
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(truth, predicted, strict=True):
        matrix[t][p] += 1
    return matrix


def format_report(classes: Sequence[str], matrix: list[list[int]]) -> str:
    """Per-class accuracy and the confusion matrix of the held-out split, as printed at the end."""
    total = sum(map(sum, matrix))
    name_w = max(len(c) for c in classes)
    lines = [f"held-out split: {total} images, classified by the exported file (the runtime's preprocessing, "
             "onnxruntime)", "per-class accuracy:"]
    for i, name in enumerate(classes):
        n = sum(matrix[i])
        lines.append(f"  {name:<{name_w}}  {matrix[i][i] / n if n else 0.0:.3f}  ({matrix[i][i]}/{n})")
    lines.append("confusion matrix (rows: true class, columns: predicted class):")
    widths = [max(len(c), len(str(total))) for c in classes]
    lines.append("  " + " " * name_w + "".join(f"  {c:>{w}}" for c, w in zip(classes, widths, strict=True)))
    for name, row in zip(classes, matrix, strict=True):
        lines.append(f"  {name:<{name_w}}" + "".join(f"  {v:>{w}}" for v, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main, "distill.py"))
