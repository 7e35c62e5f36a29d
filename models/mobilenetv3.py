"""MobileNetV3-Large and -Small, from "Searching for MobileNetV3" (Howard et al., ICCV 2019).

The paper's tables 1 and 2 are in edge_runtime/modelzoo/mobilenetv3_arch.py (no torch: the device
builds the same network as ONNX from them); this file turns them into an nn.Module. The module names
follow the layout that torchvision's `mobilenet_v3_small` / `mobilenet_v3_large` use
(features.N.block.K..., classifier.0/.3), so their
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

from typing import Callable

import torch
from torch import nn

from edge_runtime.modelzoo import mobilenetv3_arch as arch_tables
from edge_runtime.modelzoo.mobilenetv3_arch import (  # noqa: F401  (re-exported: the tables live there)
    ARCHS, BN_EPS, BN_MOMENTUM, LARGE, LARGE_HIDDEN, SMALL, SMALL_HIDDEN, Bneck, make_divisible)


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

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
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
        self.use_residual = cfg.residual
        layers: list[nn.Module] = []
        if cfg.exp_ch != cfg.in_ch:
            layers.append(ConvBNAct(cfg.in_ch, cfg.exp_ch, 1, act=cfg.act))
        layers.append(ConvBNAct(cfg.exp_ch, cfg.exp_ch, cfg.kernel, cfg.stride, groups=cfg.exp_ch, act=cfg.act))
        if cfg.se:
            layers.append(SqueezeExcite(cfg.exp_ch, cfg.se_channels))
        layers.append(ConvBNAct(cfg.exp_ch, cfg.out_ch, 1, act=None))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.out_channels = cfg.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(nn.Module):
    def __init__(self, net: arch_tables.Network, dropout: float = arch_tables.DROPOUT):
        """`net`: arch_tables.network(), the network at one width, as the torch-free builder walks it."""
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, net.stem_ch, 3, stride=2, act="HS")]
        layers += [InvertedResidual(c) for c in net.bnecks]
        layers.append(ConvBNAct(net.bnecks[-1].out_ch, net.last_ch, 1, act="HS"))   # 576 / 960 at width 1.0
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(net.last_ch, net.hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(net.hidden, net.num_classes),
        )
        self.num_classes = net.num_classes
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
    return build("mobilenet_v3_small", num_classes, width_mult, dropout)


def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV3:
    return build("mobilenet_v3_large", num_classes, width_mult, dropout)


def build(arch: str, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV3:
    """`arch` is "mobilenet_v3_small" / "mobilenet_v3_large" (or just "small" / "large")."""
    name = arch_tables.arch_name(arch)      # an unknown name is refused first, as before
    return MobileNetV3(arch_tables.network(name, num_classes, width_mult), dropout)


# torchvision's official ImageNet checkpoints (IMAGENET1K_V1). The hex part of each file name is the
# start of its SHA-256, which torch.hub checks with check_hash=True (see checkpoint.imagenet_state_dict);
# arch_tables.IMAGENET_WEIGHTS pins the full digests (edge_runtime fetch-model checks those).
IMAGENET_WEIGHTS = {name: w.url for name, w in arch_tables.IMAGENET_WEIGHTS.items()}
IMAGENET_WEIGHTS_NAME = arch_tables.IMAGENET_WEIGHTS_NAME
