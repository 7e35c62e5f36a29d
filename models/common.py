"""Pieces every models/ tool shares: version, errors, the main() wrapper, loading ONNX files."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from edge_runtime.util.argtypes import positive_int
from edge_runtime.util.errors import EXIT_OK, EXIT_UNEXPECTED, UserError

__version__ = "0.1.0"
ROOT = Path(__file__).resolve().parents[1]

# ONNX opsets of models/exporting.py's exports (here, without torch, for the tools' --help).
DEFAULT_OPSET = 17
MIN_OPSET = 11
MAX_OPSET = 20          # the TorchScript-based exporter's limit


class ToolError(UserError):
    """Bad input to a models/ tool (missing file, wrong option value...): one line, exit code 2."""


class CheckFailed(Exception):
    """The tool's own output failed a check (e.g. ONNX vs PyTorch parity): one line, exit code 1."""


def tool_name(script: str) -> str:
    return f"edge_runtime models/{script} {__version__}"


def run_main(main: Callable[[Sequence[str] | None], int | None], prog: str,
             argv: Sequence[str] | None = None) -> int:
    """Run a tool's main(); turn expected failures into one line on stderr and an exit code."""
    try:
        return int(main(argv) or EXIT_OK)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except CheckFailed as exc:
        print(f"{prog}: check failed: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:            # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_UNEXPECTED


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line.split(" : ")[-1].strip() or line   # drop onnxruntime's "[ONNXRuntimeError] : 7 : ..." prefix


def load_onnx(path: str | Path):
    """onnx.load with a one-line error naming the file."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise ToolError(f"model {path}: file not found")
    if path.is_dir():
        raise ToolError(f"model {path}: is a folder, not an .onnx file")
    if path.stat().st_size == 0:
        raise ToolError(f"model {path}: file is empty (0 bytes)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:   # protobuf raises DecodeError, onnx raises others
        raise ToolError(f"model {path}: not a readable ONNX file ({first_line(exc)})") from None
    if not model.graph.node:
        raise ToolError(f"model {path}: not a readable ONNX file (no graph)")
    return model


def ort_session(path: str | Path, threads: int = 0):
    """A CPU onnxruntime session made with the daemon's own session options (threads 0 = onnxruntime's
    default), so that evaluations and timings here are what the device computes; errors name the file."""
    import onnxruntime as ort

    from edge_runtime.engines.ort import session_options

    opts = session_options(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolError(f"model {path}: onnxruntime cannot load it ({first_line(exc)})") from None


def file_size_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 1e6


__all__ = ["CheckFailed", "DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "ROOT", "ToolError", "__version__",
           "file_size_mb", "first_line", "load_onnx", "ort_session", "positive_int", "run_main", "tool_name"]
