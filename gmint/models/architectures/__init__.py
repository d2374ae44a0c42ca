"""The audited-model zoo of the gMINT paper, registered in `gmint.models.zoo.ARCHITECTURES` on import.

| name | model | smallest input |
|---|---|---|
| `mobilenet` | MobileNet V1 (the paper's "MobileNet") | 1 px |
| `mobilenet_v2` | MobileNetV2 | 1 px |
| `resnet18`, `resnet50`, `resnet101` (alias `resnet100`) | ResNet | 1 px |
| `densenet121` | DenseNet-BC 121 | 8 px |
| `xception` | Xception | 1 px |
| `vit` | Vision Transformer | a multiple of `patch` (4) |

All run on every dataset gmint reads (digits 8 px, MNIST 28, CIFAR-10 32, GTSRB and Tiny ImageNet 64).
Down-sampling stems (`stem='imagenet'`) are the default from 64 px up; below, a stride-1 stem keeps
the last stages from collapsing to 1×1 (see each family's docstring).

`CPU_SCALE` holds the recommended options for CPU-sized experiments: the same blocks and stages with a
quarter of the channels (MobileNetV2, already narrow: half); the ViT, whose 64-wide embedding is already
small, keeps its width and halves its depth. DenseNet-121 and the ViT stay the costliest at 64 px, where
they work at full resolution (stride-1 stem; 257 tokens).
"""

from __future__ import annotations

from gmint.models.architectures import densenet, mobilenet, resnet, vit, xception

__all__ = ["CPU_SCALE", "densenet", "mobilenet", "resnet", "vit", "xception"]

CPU_SCALE: dict[str, dict[str, object]] = {
    "mobilenet": {"width": 0.25},
    "mobilenet_v2": {"width": 0.5},
    "resnet18": {"width": 0.25},
    "resnet50": {"width": 0.25},
    "resnet101": {"width": 0.25},
    "densenet121": {"width": 0.25},
    "xception": {"width": 0.25},
    "vit": {"depth": 6},
}
