"""MobileNetV3-Large and -Small, from "Searching for MobileNetV3" (Howard et al., ICCV 2019).

Written from the paper's tables 1 and 2. The module names follow the layout that torchvision's
`mobilenet_v3_small` / `mobilenet_v3_large` use (features.N.block.K..., classifier.0/.3), so their
official ImageNet checkpoints load into these modules with `strict=True` and give the same outputs.
torchvision itself is not imported here.

Architecture, in the paper's words:
  - stem: 3x3 conv, stride 2, 16 channels, h-swish;
  - bneck blocks: 1x1 expansion (skipped when expansion == input channels) -> kxk depthwise ->
    optional squeeze-and-excite -> 1x1 linear projection; residual when stride 1 and in == out;
  - squeeze-and-excite: global pool -> 1x1 conv to expansion/4 (rounded to a multiple of 8) -> ReLU
    -> 1x1 conv back -> hard-sigmoid gate;
  - efficient last stage: 1x1 conv to 576 (Small) / 960 (Large) channels with h-swish, global
    average pooling, a 1024 / 1280 hidden layer with h-swish, dropout 0.2, the classifier.
The network ends in global pooling, so it runs at any input size of 32x32 or more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

ARCHS = ("mobilenet_v3_small", "mobilenet_v3_large")

# BatchNorm as in the TensorFlow reference implementation (and torchvision's port of it).
BN_EPS = 0.001
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never going down by more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Bneck:
    """One row of the paper's table: input, kernel, expansion ("exp size"), output, SE, NL, stride."""
    in_ch: int
    kernel: int
    exp_ch: int
    out_ch: int
    se: bool
    act: str          # "RE" (ReLU) or "HS" (h-swish)
    stride: int

    def scaled(self, width_mult: float) -> "Bneck":
        return Bneck(make_divisible(self.in_ch * width_mult), self.kernel,
                     make_divisible(self.exp_ch * width_mult), make_divisible(self.out_ch * width_mult),
                     self.se, self.act, self.stride)


# Table 2: MobileNetV3-Small (11 bnecks; stem and last stage built separately).
SMALL = (
    Bneck(16, 3, 16, 16, True, "RE", 2),
    Bneck(16, 3, 72, 24, False, "RE", 2),
    Bneck(24, 3, 88, 24, False, "RE", 1),
    Bneck(24, 5, 96, 40, True, "HS", 2),
    Bneck(40, 5, 240, 40, True, "HS", 1),
    Bneck(40, 5, 240, 40, True, "HS", 1),
    Bneck(40, 5, 120, 48, True, "HS", 1),
    Bneck(48, 5, 144, 48, True, "HS", 1),
    Bneck(48, 5, 288, 96, True, "HS", 2),
    Bneck(96, 5, 576, 96, True, "HS", 1),
    Bneck(96, 5, 576, 96, True, "HS", 1),
)
SMALL_HIDDEN = 1024

# Table 1: MobileNetV3-Large (15 bnecks).
LARGE = (
    Bneck(16, 3, 16, 16, False, "RE", 1),
    Bneck(16, 3, 64, 24, False, "RE", 2),
    Bneck(24, 3, 72, 24, False, "RE", 1),
    Bneck(24, 5, 72, 40, True, "RE", 2),
    Bneck(40, 5, 120, 40, True, "RE", 1),
    Bneck(40, 5, 120, 40, True, "RE", 1),
    Bneck(40, 3, 240, 80, False, "HS", 2),
    Bneck(80, 3, 200, 80, False, "HS", 1),
    Bneck(80, 3, 184, 80, False, "HS", 1),
    Bneck(80, 3, 184, 80, False, "HS", 1),
    Bneck(80, 3, 480, 112, True, "HS", 1),
    Bneck(112, 3, 672, 112, True, "HS", 1),
    Bneck(112, 5, 672, 160, True, "HS", 2),
    Bneck(160, 5, 960, 160, True, "HS", 1),
    Bneck(160, 5, 960, 160, True, "HS", 1),
)
LARGE_HIDDEN = 1280


def _activation(name: str | None) -> Callable[[], nn.Module] | None:
    # h-swish(x) = x * ReLU6(x + 3) / 6 and hard-sigmoid(x) = ReLU6(x + 3) / 6 are PyTorch's
    # nn.Hardswish / nn.Hardsigmoid exactly; ONNX has them as ops (HardSwish from opset 14).
    return {"RE": lambda: nn.ReLU(inplace=True), "HS": lambda: nn.Hardswish(inplace=True), None: None}[name]


class ConvBNAct(nn.Sequential):
    """kxk conv (no bias) -> BatchNorm -> optional activation; 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        make_act = _activation(act)
        if make_act is not None:
            layers.append(make_act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: pool -> 1x1 (reduce 4x) -> ReLU -> 1x1 -> hard-sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        squeezed = make_divisible(channels // reduction)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class InvertedResidual(nn.Module):
    """The bneck block."""

    def __init__(self, cfg: Bneck):
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"bneck stride must be 1 or 2, got {cfg.stride}")
        self.use_residual = cfg.stride == 1 and cfg.in_ch == cfg.out_ch
        layers: list[nn.Module] = []
        if cfg.exp_ch != cfg.in_ch:
            layers.append(ConvBNAct(cfg.in_ch, cfg.exp_ch, 1, act=cfg.act))
        layers.append(ConvBNAct(cfg.exp_ch, cfg.exp_ch, cfg.kernel, cfg.stride, groups=cfg.exp_ch, act=cfg.act))
        if cfg.se:
            layers.append(SqueezeExcite(cfg.exp_ch))
        layers.append(ConvBNAct(cfg.exp_ch, cfg.out_ch, 1, act=None))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(nn.Module):
    def __init__(self, bnecks: tuple[Bneck, ...], hidden: int, num_classes: int = 1000,
                 width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        cfgs = [b.scaled(width_mult) for b in bnecks]
        last_in = cfgs[-1].out_ch
        last_out = 6 * last_in                      # 576 (Small) / 960 (Large) at width 1.0
        hidden = make_divisible(hidden * width_mult)

        layers: list[nn.Module] = [ConvBNAct(3, cfgs[0].in_ch, 3, stride=2, act="HS")]
        layers += [InvertedResidual(c) for c in cfgs]
        layers.append(ConvBNAct(last_in, last_out, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_out, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.num_classes = num_classes
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) convs, ones/zeros norms, normal(0, 0.01) linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last linear layer (fine-tuning to a new set of classes)."""
        old = self.classifier[3]
        self.classifier[3] = nn.Linear(old.in_features, num_classes)
        nn.init.normal_(self.classifier[3].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[3].bias)
        self.num_classes = num_classes


def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV3:
    return MobileNetV3(SMALL, SMALL_HIDDEN, num_classes, width_mult, dropout)


def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV3:
    return MobileNetV3(LARGE, LARGE_HIDDEN, num_classes, width_mult, dropout)


def build(arch: str, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV3:
    """`arch` is "mobilenet_v3_small" / "mobilenet_v3_large" (or just "small" / "large")."""
    name = arch if arch.startswith("mobilenet_v3_") else f"mobilenet_v3_{arch}"
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected small or large")
    factory = mobilenet_v3_small if name == "mobilenet_v3_small" else mobilenet_v3_large
    return factory(num_classes=num_classes, width_mult=width_mult, dropout=dropout)


# torchvision's official ImageNet checkpoints (IMAGENET1K_V1). The hex part of each file name is the
# start of its SHA-256, which torch.hub checks with check_hash=True (see checkpoint.imagenet_state_dict).
IMAGENET_WEIGHTS = {
    "mobilenet_v3_small": "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
    "mobilenet_v3_large": "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
}
IMAGENET_WEIGHTS_NAME = "imagenet (torchvision IMAGENET1K_V1)"

