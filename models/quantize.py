"""INT8 static post-training quantisation of a float ONNX classifier, with onnxruntime's tools.

    python models/quantize.py --model FP32.onnx --calibration-dir DIR --output INT8.onnx [--eval-dir DIR]

QDQ format, per-channel int8 weights, uint8 activations calibrated on real images that are read and
preprocessed exactly as the runtime does it (cv2.imread -> edge_runtime.engines.preprocess.Preprocessor, driven
by the model's own description: its metadata, else its sidecar YAML). The INT8 file carries that
description in its metadata, so the daemon needs nothing else to run it. With --eval-dir, reports the
top-1 agreement with the float model and the size and latency of both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):          # run as `python models/quantize.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from edge_runtime.engines import spec as ms  # noqa: E402
from edge_runtime.util.errors import ConfigError  # noqa: E402

from models.common import (CheckFailed, ToolError, file_size_mb, first_line, load_onnx, ort_session,  # noqa: E402
                           positive_int, run_main, tool_name)
from models.imagefolder import list_images, preprocessed, spread  # noqa: E402

_FLOAT, _UINT8 = 1, 2        # onnx.TensorProto.FLOAT / UINT8
PER_CHANNEL_OPSET = 13
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
              "MatMulInteger", "DynamicQuantizeLinear"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="quantize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="float ONNX classifier (with metadata or a sidecar)")
    p.add_argument("--calibration-dir", type=Path, required=True,
                   help="folder of representative images (searched recursively); a few hundred is plenty")
    p.add_argument("--output", type=Path, required=True, help="where to write the INT8 model")
    p.add_argument("--eval-dir", type=Path, help="images to compare INT8 with FP32 on (top-1 agreement, latency)")
    p.add_argument("--max-calibration", type=positive_int, default=300,
                   help="use at most this many calibration images, spread over the folder (default 300)")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="activation range calibration (default minmax)")
    p.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor instead of per channel")
    p.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights: avoids u8s8 saturation on x86 CPUs without VNNI (not needed on ARM)")
    p.add_argument("--latency-runs", type=positive_int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads for eval/latency (default: all cores)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    return p.parse_args(argv)


def describe(path: Path, model) -> ms.ModelSpec:
    """The runtime's description of `model` (metadata, then sidecar, then defaults), checked against it."""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        spec = ms.resolve(str(path), props, None)
    except ConfigError as exc:
        raise ToolError(f"model {path}: its description is invalid: {exc}") from None
    if spec.origin.startswith("defaults"):
        print(f"warning: {path} has no description (no metadata, no sidecar {ms.sidecar_path(path).name}); "
              f"assuming {spec.origin}", file=sys.stderr)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ToolError(f"model {path}: expected one image input, it has {len(inputs)}")
    tensor = inputs[0].type.tensor_type
    dtype = {_FLOAT: "float32", _UINT8: "uint8"}.get(tensor.elem_type)
    if dtype != spec.input.dtype:
        raise ToolError(f"model {path}: input is {dtype or f'type {tensor.elem_type}'} but its description "
                        f"({spec.origin}) says {spec.input.dtype}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    h, w = spec.input.size
    want = [None, 3, h, w] if spec.input.layout == "nchw" else [None, h, w, 3]
    if len(dims) != 4 or any(d is not None and n is not None and d != n for d, n in zip(dims, want, strict=True)):
        raise ToolError(f"model {path}: input shape {dims} does not match its description ({spec.origin}): "
                        f"{spec.input.layout.upper()} {h}x{w}")
    return spec


class CalibrationReader:
    """onnxruntime's CalibrationDataReader: one preprocessed image per call, with a progress bar."""

    def __init__(self, paths: list[Path], spec: ms.ModelSpec, input_name: str):
        from tqdm import tqdm

        self._bar = tqdm(total=len(paths), desc="calibrating", unit="img", dynamic_ncols=True)
        self._images = preprocessed(paths, spec.input)
        self._name = input_name

    def get_next(self):
        batch = next(self._images, None)
        if batch is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self._name: batch}


def quantize(src: Path, dst: Path, reader: CalibrationReader, args: argparse.Namespace) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:    # shape inference + graph optimisation (BN folding etc.), as onnxruntime recommends
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:
            print(f"warning: onnxruntime's pre-processing failed ({first_line(exc)}); quantising the model as is",
                  file=sys.stderr)
            prepared = src
        opset = onnx_opset(prepared)
        if opset < PER_CHANNEL_OPSET and not args.per_tensor:
            # Per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) arrived in opset 13.
            import onnx
            from onnx import version_converter

            print(f"note: {src.name} is opset {opset}; converting to opset {PER_CHANNEL_OPSET} for per-channel "
                  f"weights (onnxruntime >= 1.6 runs it)", file=sys.stderr)
            upgraded = Path(tmp) / "opset13.onnx"
            try:
                onnx.save(version_converter.convert_version(onnx.load(str(prepared)), PER_CHANNEL_OPSET), str(upgraded))
            except Exception as exc:
                raise CheckFailed(f"cannot convert {src} to opset {PER_CHANNEL_OPSET} for per-channel "
                                  f"quantisation ({first_line(exc)}); try --per-tensor") from None
            prepared = upgraded
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[args.method]
        try:
            quantize_static(str(prepared), str(dst), reader, quant_format=QuantFormat.QDQ,
                            per_channel=not args.per_tensor, reduce_range=args.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method,
                            extra_options={"CalibMaxIntermediateOutputs": 16})
        except ToolError:
            raise
        except Exception as exc:
            raise CheckFailed(f"onnxruntime could not quantise {src}: {first_line(exc)}") from None


def onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def write_description(dst: Path, source_props: dict[str, str], spec: ms.ModelSpec, info: dict[str, str]) -> None:
    """The source's metadata (its spec embedded even when it came from a sidecar) plus quantisation info."""
    import onnx

    model = onnx.load(str(dst))
    props = {k: v for k, v in source_props.items() if not k.startswith(ms.METADATA_INFO_PREFIX)}
    props.update(spec.to_metadata(**info))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    # onnxruntime's optimiser declares every domain it knows (training, nchwc, aten...): keep the used ones.
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.save(model, str(dst))


def compare(fp32, int8, images) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run both models on each image (streamed): FP32 top-1, INT8 top-1, FP32 top-1 in INT8 top-5,
    and the first image (for timing)."""
    name32, name8 = fp32.get_inputs()[0].name, int8.get_inputs()[0].name
    ref, got, in_top5, first = [], [], [], None
    for x in images:
        first = x if first is None else first
        a = fp32.run(None, {name32: x})[0].reshape(-1)
        b = int8.run(None, {name8: x})[0].reshape(-1)
        ref.append(int(a.argmax()))
        got.append(int(b.argmax()))
        in_top5.append(ref[-1] in np.argsort(-b)[:5])
    return np.array(ref), np.array(got), np.array(in_top5), first


def latency_ms(session, image: np.ndarray, runs: int) -> float:
    name = session.get_inputs()[0].name
    for _ in range(min(5, runs)):
        session.run(None, {name: image})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: image})
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    src, dst = args.model, args.output
    model = load_onnx(src)
    if dst.suffix != ".onnx":
        raise ToolError(f"--output {dst}: expected a file name ending in .onnx")
    if dst.resolve() == src.resolve():
        raise ToolError(f"--output {dst} would overwrite the float model")
    if any(n.op_type in _QUANT_OPS for n in model.graph.node):
        raise ToolError(f"model {src}: already quantised (it has QuantizeLinear/QLinear* nodes)")
    spec = describe(src, model)
    source_props = {p.key: p.value for p in model.metadata_props}
    del model
    calibration = spread(list_images(args.calibration_dir, "--calibration-dir"), args.max_calibration)
    evaluation = list_images(args.eval_dir, "--eval-dir") if args.eval_dir else []
    if args.threads < 0:
        raise ToolError(f"--threads must be >= 0, got {args.threads}")

    logging.getLogger("root").setLevel(logging.ERROR)   # onnxruntime.quantization logs advice via root
    fp32 = ort_session(src, args.threads)
    input_name = fp32.get_inputs()[0].name
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        quantize(src, tmp, CalibrationReader(calibration, spec, input_name), args)
        info = dict(spec.info)
        info.update({
            "quantizer": tool_name("quantize.py"),
            "quantization": (f"int8 static QDQ, {'per-tensor' if args.per_tensor else 'per-channel'} int8 weights"
                             f"{' (reduce_range)' if args.reduce_range else ''}, uint8 activations, "
                             f"{args.method} calibration on {len(calibration)} images"),
            "source_model": f"{src.name} (sha256 {sha256(src)[:16]}; description from {spec.origin})",
        })
        info["opset"] = str(onnx_opset(tmp))
        write_description(tmp, source_props, spec, info)
        try:                                        # the file must load before it replaces anything
            int8 = ort_session(tmp, args.threads)
        except ToolError as exc:
            raise CheckFailed(f"the quantised model does not load in onnxruntime: {exc}") from None
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)

    report: dict = {"fp32_model": str(src), "int8_model": str(dst), "calibration_images": len(calibration),
                    "fp32_mb": round(file_size_mb(src), 3), "int8_mb": round(file_size_mb(dst), 3)}
    print(f"quantised {src} -> {dst} ({len(calibration)} calibration images from {args.calibration_dir})")
    print(f"  description: {spec.origin} -> embedded in {dst.name}'s metadata")
    print(f"  size: FP32 {report['fp32_mb']:.2f} MB, INT8 {report['int8_mb']:.2f} MB "
          f"({report['fp32_mb'] / report['int8_mb']:.1f}x smaller)")
    if evaluation:
        images = tqdm(preprocessed(evaluation, spec.input), total=len(evaluation), desc="evaluating",
                      unit="img", dynamic_ncols=True)
        ref_top1, got_top1, top5, first = compare(fp32, int8, images)
        agree, in_top5, n = int((ref_top1 == got_top1).sum()), int(top5.sum()), len(evaluation)
        lat_fp32 = latency_ms(fp32, first, args.latency_runs)
        lat_int8 = latency_ms(int8, first, args.latency_runs)
        threads = args.threads or "default"
        report.update({"eval_images": n, "top1_agreement": agree / n, "top1_agree": agree,
                       "fp32_top1_in_int8_top5": in_top5, "fp32_latency_ms": round(lat_fp32, 3),
                       "int8_latency_ms": round(lat_int8, 3), "threads": threads,
                       "disagreements": [{"image": str(p), "fp32": spec.label(int(r)), "int8": spec.label(int(g))}
                                         for p, r, g in zip(evaluation, ref_top1, got_top1, strict=True) if r != g]})
        print(f"  top-1 agreement with FP32 on {n} images from {args.eval_dir}: "
              f"{agree}/{n} ({100 * agree / n:.1f}%); FP32 top-1 within INT8 top-5: {in_top5}/{n}")
        for d in report["disagreements"]:
            print(f"    {Path(d['image']).name}: FP32 {d['fp32']!r}, INT8 {d['int8']!r}")
        print(f"  latency (batch 1, {threads} onnxruntime threads, median of {args.latency_runs}): "
              f"FP32 {lat_fp32:.2f} ms, INT8 {lat_int8:.2f} ms ({lat_fp32 / lat_int8:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "quantize.py"))
