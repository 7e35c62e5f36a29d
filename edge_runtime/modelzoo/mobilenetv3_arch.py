"""MobileNetV3-Large and -Small as data, from "Searching for MobileNetV3" (Howard et al., ICCV 2019).

The one place the architecture is written down. No torch here: models/mobilenetv3.py builds its
nn.Module from these tables, and modelzoo/mobilenetv3_onnx.py emits the same network as an ONNX graph
on the device. Parameter names follow torchvision's `mobilenet_v3_small` / `_large` state dicts
(features.N.block.K..., classifier.0/.3), so their published ImageNet weights fit both.

  - stem: 3x3 conv, stride 2, 16 channels, h-swish;
  - bneck: 1x1 expansion (skipped when expansion == input channels) -> kxk depthwise -> optional
    squeeze-and-excite -> 1x1 linear projection; residual when stride 1 and in == out;
  - squeeze-and-excite: global pool -> 1x1 conv to expansion/4 (rounded to a multiple of 8) -> ReLU
    -> 1x1 conv back -> hard-sigmoid gate;
  - last stage: 1x1 conv to 6x the last bneck's output (576 Small / 960 Large) with h-swish, global
    average pooling, a 1024 / 1280 hidden layer with h-swish, dropout 0.2, the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("mobilenet_v3_small", "mobilenet_v3_large")

# BatchNorm as in the TensorFlow reference implementation (and torchvision's port of it).
BN_EPS = 0.001
BN_MOMENTUM = 0.01
SE_REDUCTION = 4
LAST_EXPANSION = 6          # last conv: 6x the last bneck's output channels
DROPOUT = 0.2


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

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch

    @property
    def se_channels(self) -> int:
        return make_divisible(self.exp_ch // SE_REDUCTION)


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

TABLES = {"mobilenet_v3_small": (SMALL, SMALL_HIDDEN), "mobilenet_v3_large": (LARGE, LARGE_HIDDEN)}


def arch_name(arch: str) -> str:
    """"small" / "large" / "mobilenet_v3_small" / "mobilenet_v3_large" -> the full name; ValueError else."""
    name = arch if arch.startswith("mobilenet_v3_") else f"mobilenet_v3_{arch}"
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected small or large")
    return name


@dataclass(frozen=True)
class Network:
    """The whole network at one width: what both builders walk."""
    arch: str
    stem_ch: int
    bnecks: tuple[Bneck, ...]
    last_ch: int
    hidden: int
    num_classes: int


def network(arch: str, num_classes: int = 1000, width_mult: float = 1.0) -> Network:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    name = arch_name(arch)
    table, hidden = TABLES[name]
    cfgs = tuple(b.scaled(width_mult) for b in table)
    return Network(name, cfgs[0].in_ch, cfgs, LAST_EXPANSION * cfgs[-1].out_ch,
                   make_divisible(hidden * width_mult), num_classes)


# torchvision's published ImageNet weights (IMAGENET1K_V1): URL, SHA-256 and size. torch.hub checks
# only the first 8 hex digits (the file name's); the full digests are pinned here.
@dataclass(frozen=True)
class Weights:
    url: str
    sha256: str
    size: int


IMAGENET_WEIGHTS = {
    "mobilenet_v3_small": Weights("https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
                                  "047dcff4addef86ea5bc2eff13c9614dc11f47ab1160d0a71a25e7db994f4e1f", 10_306_551),
    "mobilenet_v3_large": Weights("https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
                                  "8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04", 22_139_423),
}
IMAGENET_WEIGHTS_NAME = "imagenet (torchvision IMAGENET1K_V1)"
