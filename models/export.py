"""Export MobileNetV3 to a self-describing ONNX file for the edge_runtime daemon.

    python models/export.py --arch small --weights imagenet --output models/mobilenetv3_small.onnx

The file carries its own description in metadata_props (input size, resize, colour, layout, dtype,
mean/std, labels, architecture, weights' origin, exporter version), so the daemon needs no sidecar.
After writing, the file is checked (onnx.checker; onnxruntime vs PyTorch at batch 1 and 4) and only
then moved into place.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):          # run as `python models/export.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.util.errors import ConfigError  # noqa: E402

from models.common import (DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ROOT, ToolError,  # noqa: E402
                           positive_int, run_main, tool_name)

# torch (and what imports it) is imported in main(), after the arguments are parsed: --help and
# usage errors come back at once instead of after the seconds torch takes to load.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="export.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("small", "large"), default="small", help="MobileNetV3 variant (default small)")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|random|PATH",
                   help="imagenet: torchvision's IMAGENET1K_V1 checkpoint (downloaded once into torch's hub "
                        "cache, hash-checked); random: seeded Kaiming init, for plumbing only; PATH: a .pth "
                        "state dict or a models/distill.py checkpoint (default imagenet)")
    p.add_argument("--seed", type=int, default=0, help="seed for --weights random (default 0)")
    p.add_argument("--num-classes", type=positive_int, help="default: from the checkpoint, else 1000")
    p.add_argument("--width-mult", type=float, help="width multiplier (default: from the checkpoint, else 1.0)")
    p.add_argument("--labels", type=Path, metavar="FILE",
                   help="class names, one per line (default: the checkpoint's classes, or ImageNet's for 1000)")
    p.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="fixed input size of the exported graph (default: the checkpoint's, else 224 224)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET}; 11 for older runtimes)")
    p.add_argument("--fuse-preprocess", action="store_true",
                   help="bake normalisation and layout into the graph: the model takes uint8 NHWC RGB pixels")
    p.add_argument("--output", type=Path, help="default models/mobilenetv3_<arch>.onnx")
    return p.parse_args(argv)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_state_dict(arch: str):
    """torchvision's ImageNet weights (models/checkpoint.py); a module-level seam the tests replace."""
    from models.checkpoint import imagenet_state_dict as load

    return load(arch)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from models import checkpoint, exporting
    from models.mobilenetv3 import IMAGENET_WEIGHTS_NAME, build

    arch = f"mobilenet_v3_{args.arch}"
    output = args.output or ROOT / "models" / f"mobilenetv3_{args.arch}.onnx"
    if output.suffix != ".onnx":
        raise ToolError(f"--output {output}: expected a file name ending in .onnx")
    if output.is_dir():
        raise ToolError(f"--output {output} is a folder")
    if not exporting.MIN_OPSET <= args.opset <= exporting.MAX_OPSET:
        raise ToolError(f"--opset {args.opset} is not supported: choose {exporting.MIN_OPSET}..{exporting.MAX_OPSET}")
    if args.width_mult is not None and args.width_mult <= 0:
        raise ToolError(f"--width-mult must be > 0, got {args.width_mult}")

    # Weights first: a checkpoint can supply the class count, names, width and input size.
    ckpt = None
    if args.weights == "imagenet":
        if (args.num_classes or 1000) != 1000 or (args.width_mult or 1.0) != 1.0:
            raise ToolError("--weights imagenet is the 1000-class, width 1.0 model; "
                            "use models/distill.py to train for other classes")
    elif args.weights != "random":
        ckpt = checkpoint.load(args.weights)
        if ckpt.arch and ckpt.arch != arch:
            raise ToolError(f"weights {args.weights} are a {ckpt.arch}, not --arch {args.arch}")
    num_classes = args.num_classes or (ckpt.num_classes if ckpt else None) or 1000
    width_mult = args.width_mult or (ckpt.width_mult if ckpt else None) or 1.0
    input_size = tuple(args.input_size or (ckpt.input_size if ckpt and ckpt.input_size else (224, 224)))

    if ckpt is not None and ckpt.classes and len(ckpt.classes) != num_classes:
        raise ToolError(f"weights {args.weights} name {len(ckpt.classes)} classes but --num-classes is {num_classes}")
    if args.labels is not None:
        try:
            labels = ms.read_labels(args.labels)
        except ConfigError as exc:
            raise ToolError(str(exc)) from None
        if len(labels) != num_classes:
            raise ToolError(f"--labels {args.labels} has {len(labels)} names but the model has {num_classes} classes")
    elif ckpt is not None and ckpt.classes:
        labels = tuple(ckpt.classes)
    elif num_classes == 1000:
        labels = exporting.imagenet_labels()
    else:
        labels = None
        print(f"note: no --labels for {num_classes} classes; the runtime will call them class_0, class_1, ...")

    spec = exporting.make_spec(input_size, labels)
    torch.manual_seed(args.seed)
    model = build(arch, num_classes=num_classes, width_mult=width_mult)
    if args.weights == "imagenet":
        checkpoint.load_into(model, imagenet_state_dict(arch), IMAGENET_WEIGHTS_NAME)
        weights = IMAGENET_WEIGHTS_NAME
    elif args.weights == "random":
        weights = f"untrained (random init, seed {args.seed})"
    else:
        checkpoint.load_into(model, ckpt.state_dict, str(args.weights))
        weights = f"{Path(args.weights).resolve()} (sha256 {sha256(Path(args.weights))[:16]})"
    model.eval()

    network, float_input = model, spec.input
    if args.fuse_preprocess:
        model, spec = exporting.fuse_preprocess(model, spec)
    fused = (f"uint8 NHWC {float_input.color.upper()} pixels; the graph does /255, mean {list(float_input.mean)}, "
             f"std {list(float_input.std)} and NHWC->NCHW") if args.fuse_preprocess else "no"
    info = {"arch": arch, "weights": weights, "exporter": tool_name("export.py"), "width_mult": f"{width_mult:g}",
            "torch": torch.__version__, "input_fused": fused}

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        exporting.export_onnx(model, spec, tmp, info=info, opset=args.opset)
        diffs = exporting.verify_onnx(tmp, model, spec)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)

    inp = spec.input
    h, w = inp.size
    how = f"resize shorter side to {inp.resize}, centre crop" if inp.resize else "resize"
    norm = "raw 0-255 pixels (normalisation inside the graph)" if inp.dtype == "uint8" else \
        f"mean {list(inp.mean)} std {list(inp.std)}"
    print(f"exported {arch} ({weights}) -> {output}")
    print(f"  input: batch x {'3x%dx%d' % (h, w) if inp.layout == 'nchw' else '%dx%dx3' % (h, w)} "
          f"{inp.dtype} {inp.layout.upper()} {inp.color.upper()}; {how} {h}x{w}; {norm}")
    names = "none" if labels is None else f"{len(labels)} ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})"
    print(f"  output: {num_classes} logits; labels: {names}")
    print("  onnx.checker: ok; metadata: ok")
    print(f"  onnxruntime vs PyTorch (opset {args.opset}): max abs diff "
          + ", ".join(f"{p} at batch {b}" for b, p in diffs.items()))
    print("  " + exporting.summary(model, spec, output, network))
    if weights.startswith("untrained"):
        print("  warning: untrained weights: the predictions are meaningless (use --weights imagenet or a checkpoint)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "export.py"))
