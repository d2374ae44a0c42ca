"""Tiny audited models and batches shared by the engine tests, each with a readable id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Problem:
    id: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int = 5

    def make(self, batch: int = 6, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        """A float64 model in eval mode (BatchNorm statistics randomised) with a batch and labels."""
        torch.manual_seed(seed)
        model = self.build().double()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:  # without them it uses the batch's
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(batch, *self.input_shape, dtype=torch.float64)
        y = torch.randint(0, self.num_classes, (batch,))
        return model.eval(), x, y


PROBLEMS = [
    Problem("linear", lambda: nn.Sequential(nn.Linear(7, 9), nn.Tanh(), nn.Linear(9, 8), nn.ReLU(),
                                            nn.Linear(8, 5)), (7,)),
    Problem("conv", lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(6 * 2 * 2, 5)), (2, 6, 6)),
    Problem("conv-batchnorm", lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4),
                                                    nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                                    nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                                    nn.Flatten(), nn.Linear(4, 5)), (3, 5, 5)),
]
