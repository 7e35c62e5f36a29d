"""Our MobileNetV3 against torchvision's: same state_dict layout, same outputs from the same weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.register_assert_rewrite("models_testlib")
import models_testlib  # noqa: E402,F401  (puts the repository root on sys.path for `models`)

pytest_plugins = ["models_testlib"]   # its fixtures

torch = pytest.importorskip("torch", reason="needs PyTorch: ./install.sh --dev --models")
torchvision = pytest.importorskip("torchvision", reason="needs PyTorch: ./install.sh --dev --models")

from models import mobilenetv3  # noqa: E402
from models.exporting import count_macs  # noqa: E402

TV = {"small": torchvision.models.mobilenet_v3_small, "large": torchvision.models.mobilenet_v3_large}


@pytest.mark.parametrize("arch", ["small", "large"])
@pytest.mark.parametrize("width_mult", [1.0, 0.75, 0.5])
def test_state_dict_keys_and_shapes_are_torchvisions(arch, width_mult):
    ours = mobilenetv3.build(arch, width_mult=width_mult).state_dict()
    theirs = TV[arch](width_mult=width_mult).state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


@pytest.mark.parametrize("arch", ["small", "large"])
def test_torchvision_weights_load_strict_and_give_the_same_outputs(arch, trained_like):
    torch.manual_seed(0)
    reference = TV[arch]().eval()
    trained_like(reference, seed=1)         # trained-looking statistics: outputs of order 1, not 1e-9
    ours = mobilenetv3.build(arch).eval()
    result = ours.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for shape in [(2, 3, 224, 224), (1, 3, 160, 208)]:          # and at another resolution
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            want, got = reference(x), ours(x)
        assert want.abs().max() > 0.5, "the comparison would be meaningless on near-zero outputs"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_num_classes_and_layer_tables():
    small, large = mobilenetv3.mobilenet_v3_small(num_classes=7), mobilenetv3.mobilenet_v3_large()
    blocks = lambda m: [b for b in m.features if isinstance(b, mobilenetv3.InvertedResidual)]  # noqa: E731
    assert len(blocks(small)) == 11 and len(blocks(large)) == 15
    assert small.classifier[3].out_features == 7 and small.classifier[0].out_features == 1024
    assert large.features[-1][0].out_channels == 960 and large.classifier[0].out_features == 1280
    assert small.features[-1][0].out_channels == 576
    assert small.classifier[2].p == 0.2
    # SE reduces 4x (rounded to a multiple of 8) and gates with a hard sigmoid.
    se = small.features[1].block[1]
    assert isinstance(se, mobilenetv3.SqueezeExcite) and se.fc1.out_channels == 8
    assert isinstance(se.scale_activation, torch.nn.Hardsigmoid)
    assert [b.use_residual for b in blocks(small)] == [False, False, True, False, True, True, False, True,
                                                       False, True, True]


def test_hswish_is_the_papers_formula():
    x = torch.linspace(-6, 6, 97)
    layer = mobilenetv3.mobilenet_v3_small().features[0][2]
    torch.testing.assert_close(layer(x.clone()), x * torch.clamp(x + 3, 0, 6) / 6)


@pytest.mark.parametrize("arch, paper_macs", [("small", 56e6), ("large", 219e6)])
def test_multiply_adds_match_the_paper(arch, paper_macs):
    macs = count_macs(mobilenetv3.build(arch), (224, 224))
    assert abs(macs - paper_macs) / paper_macs < 0.03, macs


@pytest.mark.parametrize("size", [(32, 32), (97, 131)])
def test_any_input_size_from_32(size):
    model = mobilenetv3.mobilenet_v3_small(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_initialisation():
    torch.manual_seed(0)
    model = mobilenetv3.mobilenet_v3_large()
    conv = model.features[-1][0]                     # 160 -> 960, 1x1: fan_out = 960
    assert abs(conv.weight.std().item() / (2 / 960) ** 0.5 - 1) < 0.05
    depthwise = model.features[2].block[1][0]        # 64 channels, 3x3, groups 64: fan_out = 64*9
    assert abs(depthwise.weight.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.1
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    hidden = model.classifier[0]
    assert abs(hidden.weight.std().item() - 0.01) < 0.0005 and bool((hidden.bias == 0).all())
    assert all(bool((m.bias == 0).all()) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and m.bias is not None)
    torch.manual_seed(0)
    again = mobilenetv3.mobilenet_v3_large()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


def test_models_code_never_imports_torchvision():
    for path in (Path(mobilenetv3.__file__).parent).glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+torchvision", path.read_text(), re.M), path


@pytest.mark.parametrize("arch, weights", [("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
                                           ("mobilenet_v3_large", "MobileNet_V3_Large_Weights")])
def test_imagenet_weights_are_torchvisions_official_checkpoint(arch, weights):
    """What --weights imagenet downloads (hash-checked by torch.hub): torchvision's IMAGENET1K_V1 file."""
    assert mobilenetv3.IMAGENET_WEIGHTS[arch] == getattr(torchvision.models, weights).IMAGENET1K_V1.url
