"""Reading and writing weights: plain state dicts (torchvision's format) and distill.py's checkpoints.

A distill.py checkpoint is a dict {"format": "edge_runtime.models/1", "arch", "width_mult", "state_dict",
"classes", "input_size", "epoch", "val_acc"}; everything in it loads with torch.load(weights_only=True).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_runtime.modelzoo.mobilenetv3_onnx import fit_problems

from .common import ToolError, first_line

FORMAT = "edge_runtime.models/1"


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    arch: str | None = None              # "mobilenet_v3_small" / "mobilenet_v3_large", when recorded
    width_mult: float | None = None
    classes: list[str] | None = None
    input_size: tuple[int, int] | None = None
    extra: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int | None:
        weight = self.state_dict.get("classifier.3.weight")
        return int(weight.shape[0]) if weight is not None else None


def load(path: str | Path) -> Checkpoint:
    """A .pth file holding a state dict (or one of our checkpoints); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"weights {path}: file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ToolError(f"weights {path}: not a loadable PyTorch state dict ({first_line(exc)})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        size = obj.get("input_size")
        return Checkpoint(obj["state_dict"], obj.get("arch"), obj.get("width_mult"), obj.get("classes"),
                          tuple(size) if size else None,
                          {k: v for k, v in obj.items() if k not in ("state_dict", "classes")})
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint(obj)
    raise ToolError(f"weights {path}: expected a state dict (name -> tensor) or a models/distill.py checkpoint")


def imagenet_state_dict(arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet checkpoint for `arch`, downloaded once into torch's hub cache and
    SHA-256 checked (the hex part of the file name is the start of the hash)."""
    from .mobilenetv3 import IMAGENET_WEIGHTS

    name = arch if arch.startswith("mobilenet_v3_") else f"mobilenet_v3_{arch}"
    url = IMAGENET_WEIGHTS[name]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress, check_hash=True)
    except Exception as exc:
        raise ToolError(f"cannot get the ImageNet weights {url} ({first_line(exc)}); they are downloaded once "
                        f"into {torch.hub.get_dir()}/checkpoints — offline, copy the file from a machine that has "
                        f"it and pass it with --weights FILE.pth (models/distill.py, export.py) or --from "
                        f"(fetch-model)") from None


def save(path: str | Path, model: nn.Module, *, arch: str, width_mult: float, classes: list[str] | None,
         input_size: tuple[int, int], **extra: Any) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "arch": arch, "width_mult": width_mult, "state_dict": state,
           "classes": list(classes) if classes else None, "input_size": list(input_size), **extra}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(obj, str(tmp))
    tmp.replace(path)                    # never leave a half-written checkpoint behind


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict=True) with a one-line error saying what does not fit."""
    problems = fit_problems({k: tuple(v.shape) for k, v in state_dict.items()},
                            {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if problems:
        raise ToolError(f"weights {source} do not fit this architecture: " + "; ".join(problems)
                        + " — check --arch, --width-mult and --num-classes")
    model.load_state_dict(state_dict, strict=True)
