"""Training pieces for distill.py: image-folder datasets, augmentation, the fit loop, the KD loss.

Validation images go through the runtime's own Preprocessor (resize shorter side, centre crop,
colour order, normalisation), so validation accuracy is what the device will see. Training images
are augmented (random resized crop, flip, mild brightness/contrast/saturation changes, no hue: colour
can be what tells a user's classes apart) and then normalised by the same Preprocessor.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edge_runtime.engines.spec import InputSpec
from edge_runtime.engines.preprocess import Preprocessor

from .common import ToolError
from .imagefolder import read_bgr

Sample = tuple[Path, int]


def min_per_class(val_fraction: float) -> int:
    """Images a class needs so that `val_fraction` of it is at least one held-out image, and one is
    left to train on: 5 at 0.2 (4 to train on, 1 to check)."""
    return max(2, math.ceil(1 / val_fraction - 1e-9))


def split_samples(samples: list[Sample], val_fraction: float, seed: int,
                  classes: list[str] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Stratified split: the same fraction of every class goes to validation (at least one image).
    A class too small for that is an error naming it, what it has and what it needs."""
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    needed = min_per_class(val_fraction)
    short = [(classes[c] if classes else items[0][0].parent.name, len(items))
             for c, items in sorted(by_class.items()) if len(items) < needed]
    if short:
        have = ", ".join(f"{name!r} has {n} image{'s' if n != 1 else ''}" for name, n in short)
        raise ToolError(f"too few images for a held-out split: {have}; each class needs at least {needed} "
                        f"({needed - 1} to train on, 1 held out to check, at --val-split {val_fraction:g})")
    train, val = [], []
    for _, items in sorted(by_class.items()):
        items = items[:]
        rng.shuffle(items)
        n_val = min(len(items) - 1, max(1, round(len(items) * val_fraction)))
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def _uniform(low: float, high: float) -> float:
    # torch's generator, so DataLoader workers get distinct, seeded streams.
    return low + (high - low) * float(torch.rand(()))


def random_resized_crop(image: np.ndarray, size: tuple[int, int], scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """Inception-style crop: a random area fraction and aspect ratio, resized to `size` (H, W)."""
    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * _uniform(*scale)
        aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(torch.randint(0, height - h + 1, ()))
            x0 = int(torch.randint(0, width - w + 1, ()))
            break
    else:   # fall back to a centre crop of the whole image
        h, w = height, width
        y0 = x0 = 0
    crop = image[y0:y0 + h, x0:x0 + w]
    return cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def jitter(image: np.ndarray, strength: float = 0.2) -> np.ndarray:
    """Random brightness, contrast and saturation in [1 - strength, 1 + strength]; hue untouched."""
    img = image.astype(np.float32)
    img *= _uniform(1 - strength, 1 + strength)                                  # brightness
    grey = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    c = _uniform(1 - strength, 1 + strength)
    img = img * c + (1 - c) * float(grey.mean())                                 # contrast
    s = _uniform(1 - strength, 1 + strength)
    img = img * s + (1 - s) * grey[:, :, None]                                   # saturation
    return np.clip(img, 0, 255).astype(np.uint8)


class FolderDataset(Dataset):
    """(image path, label) samples -> (CHW float tensor, label)."""

    def __init__(self, samples: list[Sample], spec: InputSpec, *, train: bool,
                 crop_scale: tuple[float, float] = (0.25, 1.0)):
        if spec.layout != "nchw" or spec.dtype != "float32":
            raise ValueError("training needs a float32 NCHW input spec")
        self.samples = samples
        self.spec = spec
        self.train = train
        self.crop_scale = crop_scale
        self._eval = Preprocessor(spec)                               # exactly the runtime's pipeline
        self._normalise = Preprocessor(dataclasses.replace(spec, resize=None))  # for already-sized crops

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = read_bgr(path)
        if self.train:
            image = random_resized_crop(image, self.spec.size, self.crop_scale)
            if float(torch.rand(())) < 0.5:
                image = np.ascontiguousarray(image[:, ::-1])
            image = jitter(image)
            x = self._normalise(image)
        else:
            x = self._eval(image)
        return torch.from_numpy(x[0]), label


def loader(samples: list[Sample], spec: InputSpec, *, train: bool, batch_size: int, workers: int,
           seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(FolderDataset(samples, spec, train=train), batch_size=batch_size, shuffle=train,
                      drop_last=train and len(samples) > batch_size, num_workers=workers,
                      generator=generator, persistent_workers=workers > 0)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float,
            temperature: float) -> torch.Tensor:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    The T^2 factor keeps the soft term's gradients on the same scale as the hard term's (Hinton et al.).
    """
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1 - alpha) * temperature ** 2 * soft


@torch.no_grad()
def evaluate(model: nn.Module, data: DataLoader) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in data:
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return correct / total, loss / total


@dataclass
class FitResult:
    best_acc: float
    best_loss: float
    best_epoch: int
    state_dict: dict[str, torch.Tensor]


def fit(model: nn.Module, train_data: DataLoader, val_data: DataLoader, *, epochs: int, lr: float,
        weight_decay: float, loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        name: str, on_best: Callable[[nn.Module, int, float], None] | None = None,
        progress: bool = True, bn_batches: int = 50) -> FitResult:
    """AdamW with a cosine learning-rate schedule (per step, short linear warm-up), keeping the best
    epoch by validation accuracy (ties: lower validation loss). `loss_fn(logits, images, labels)`.
    Before each validation the BatchNorm statistics are recomputed (recalibrate_bn)."""
    from tqdm import tqdm

    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)     # no weight decay on norms and biases
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total = epochs * len(train_data)
    warmup = min(len(train_data), max(1, total // 20))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best = FitResult(-1.0, math.inf, 0, {})
    for epoch in range(1, epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(train_data, desc=f"{name} {epoch}/{epochs}", unit="batch", leave=False,
                   dynamic_ncols=True, disable=not progress)
        for x, y in bar:
            loss = loss_fn(model(x), x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        recalibrate_bn(model, train_data, bn_batches)
        acc, val_loss = evaluate(model, val_data)
        improved = acc > best.best_acc or (acc == best.best_acc and val_loss < best.best_loss)
        if improved:
            best = FitResult(acc, val_loss, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if on_best is not None:
                on_best(model, epoch, acc)
        print(f"{name} epoch {epoch}/{epochs}: train loss {running / max(seen, 1):.3f}, val loss {val_loss:.3f}, "
              f"val acc {acc:.3f}{' (best)' if improved else ''}", flush=True)
    model.load_state_dict(best.state_dict)
    return best


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: DataLoader, max_batches: int) -> None:
    """"Precise BN": recompute every BatchNorm's running statistics for the current weights, as an
    equally weighted average over up to `max_batches` training batches.

    Running statistics updated with the ImageNet recipe's momentum (0.01) lag far behind the weights in
    a short fine-tuning run, and from a random init they start from (mean 0, var 1) that no layer
    has; evaluation would then see the wrong normalisation and report near-chance accuracy.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative moving average
    model.train()
    for i, (x, _) in enumerate(data):
        if i >= max_batches:
            break
        model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
