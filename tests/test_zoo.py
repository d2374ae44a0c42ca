"""Audited-model zoo: every architecture on every dataset shape, exact per-sample gradients, fidelity."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gmint.errors import InputError
from gmint.features.engine import ENGINES
from gmint.features.layers import resolve_parameters, weight_layers
from gmint.features.reduce import parse_reduction
from gmint.models.architectures import CPU_SCALE
from gmint.models.zoo import ARCHITECTURES, build

# (in_channels, image_size, num_classes) of the datasets gmint audits.
DATASETS = {
    "mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "gtsrb": (3, 64, 43),
    "tiny_imagenet": (3, 64, 200),
    "digits": (1, 8, 10),
}
# Narrow variants with every block and stage of the full topology, so the suite stays fast.
TINY: dict[str, dict[str, object]] = {
    "mobilenet": {"width": 0.125},
    "mobilenet_v2": {"width": 0.125},
    "resnet18": {"width": 0.125},
    "resnet50": {"width": 0.0625},
    "resnet101": {"width": 0.0625},
    "densenet121": {"width": 0.125},
    "xception": {"width": 0.0625, "middle_blocks": 1},
    "vit": {"dim": 32, "depth": 2},
}
ALIASES = {"resnet100": "resnet101"}
NAMES = [name for name in ARCHITECTURES.names() if name not in ALIASES]


def tiny(name: str, channels: int, classes: int, size: int) -> nn.Module:
    return build(name, channels, classes, size, **TINY.get(name, {}))


def weight_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Modules whose `weight` has ≥ 2 dims: the layers the layer presets choose from."""
    return {m: name for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_on_every_dataset_shape(name: str, dataset: str) -> None:
    torch.manual_seed(0)
    channels, size, classes = DATASETS[dataset]
    model = tiny(name, channels, classes, size).train()
    x, y = torch.randn(2, channels, size, size), torch.tensor([0, classes - 1])
    out = model(x)
    assert out.shape == (2, classes)
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # What per-sample engines and layer presets rely on: weights in Conv2d/Linear, no in-place ops.
    assert all(isinstance(m, nn.Conv2d | nn.Linear) for m in weight_modules(model))
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("dataset", ["cifar10", "gtsrb"])  # stride-1 and down-sampling stems
@pytest.mark.parametrize("name", NAMES)
def test_presets_and_vmap_engine_match_the_naive_loop(name: str, dataset: str) -> None:
    """gmint's own presets and vmap engine on each architecture equal one autograd call per sample."""
    torch.manual_seed(0)
    channels, size, classes = DATASETS[dataset]
    model = tiny(name, channels, classes, size).double()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model(torch.randn(8, channels, size, size, dtype=torch.float64) * 2 + 0.5)
    model.eval()
    x, y = torch.randn(3, channels, size, size, dtype=torch.float64), torch.tensor([0, 3, classes - 1])
    assert len(weight_layers(model, x)) == len(weight_modules(model)), "some weight layer never runs"
    layers = resolve_parameters(model, "combined", x)
    assert len(layers) == 3
    flat = parse_reduction("flat")
    ref = ENGINES.get("naive")(model, layers, flat, x, y)
    got = ENGINES.get("vmap")(model, layers, flat, x, y, chunk_size=2)
    for n in layers:
        assert ref.features[n].abs().sum() > 0, f"{n}: zero gradient proves nothing"
        torch.testing.assert_close(got.features[n], ref.features[n], rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize(("name", "classes", "expected"), [
    ("resnet18", 1000, 11_689_512),  # torchvision
    ("resnet50", 1000, 25_557_032),  # torchvision
    ("resnet50", 10, 23_528_522),  # torchvision backbone + 10-class head
    ("resnet101", 1000, 44_549_160),  # torchvision
    ("mobilenet_v2", 1000, 3_504_872),  # torchvision
    ("mobilenet", 1000, 4_231_976),  # Keras MobileNet(alpha=1.0) trainable; 3.2M of it before the classifier
    ("xception", 1000, 22_855_952),  # Keras Xception trainable
    # torchvision's 7,978,856 less its 7×7 stem (3·64·40 = 7,680 more than 3×3) and stem BN (128)
    ("densenet121", 1000, 7_971_048),
])
def test_parameter_counts_match_reference_implementations(name: str, classes: int, expected: int) -> None:
    with torch.device("meta"):  # shapes only, no allocation
        model = build(name, 3, classes, 224)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_vit_parameter_count_matches_its_formula() -> None:
    d, depth, patches, classes = 64, 12, (32 // 4) ** 2, 10
    embed = 3 * d * 4 * 4 + d + d + (patches + 1) * d  # patch conv + bias, class token, positions
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    expected = embed + depth * block + 2 * d + d * classes + classes
    with torch.device("meta"):
        model = build("vit", 3, classes, 32)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet100_is_resnet101() -> None:
    assert ARCHITECTURES.get("resnet100") is ARCHITECTURES.get("resnet101")


@pytest.mark.parametrize(("name", "size", "stem", "kernel", "stride"), [
    ("resnet50", 32, None, 3, 1),
    ("resnet50", 64, None, 7, 2),
    ("resnet50", 64, "cifar", 3, 1),
    ("resnet18", 28, "imagenet", 7, 2),
    ("mobilenet", 32, None, 3, 1),
    ("mobilenet", 64, None, 3, 2),
    ("xception", 32, None, 3, 1),
    ("xception", 64, None, 3, 2),
])
def test_stem_defaults_to_stride_one_below_64_px(name: str, size: int, stem: str | None, kernel: int,
                                                 stride: int) -> None:
    options = {} if stem is None else {"stem": stem}
    with torch.device("meta"):
        first = next(m for m in build(name, 3, 10, size, **options).modules() if isinstance(m, nn.Conv2d))
    assert (first.kernel_size, first.stride) == ((kernel, kernel), (stride, stride))


@pytest.mark.parametrize(("name", "size", "options", "message"), [
    ("vit", 30, {}, "not divisible by the patch size"),
    ("vit", 32, {"dim": 60}, "not divisible by heads"),
    ("densenet121", 4, {}, "at least 8"),
    ("resnet50", 32, {"stem": "tiny"}, "stem must be one of"),
])
def test_unsupported_configurations_raise_clear_errors(name: str, size: int, options: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(InputError, match=message):
        build(name, 3, 10, size, **options)


def test_vit_width_keeps_dim_divisible_by_heads() -> None:
    model = build("vit", 3, 10, 32, width=0.3, depth=1)
    assert model.head.in_features % 8 == 0


def test_cpu_scale_configs_build_and_run() -> None:
    assert set(CPU_SCALE) <= set(ARCHITECTURES.names())
    for name, options in CPU_SCALE.items():
        with torch.device("meta"):
            out = build(name, 3, 10, 32, **options)(torch.empty(2, 3, 32, 32))
        assert out.shape == (2, 10)
