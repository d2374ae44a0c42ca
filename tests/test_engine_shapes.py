"""Engines against the naive loop on generated layer shapes (as Opacus tests its per-sample gradients):
channels, kernel, stride, padding, dilation, groups, bias, batch size and token counts are drawn by
hypothesis, and every engine must equal the one-sample-at-a-time loop in float64 for every reduction."""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gmint.features.engine.hooks import HooksFallbackWarning
from gmint.features.reduce import parse_reduction
from tests.naive import assert_engine_equals_naive

REDUCTIONS = ("mean", "l2", "abs_mean", "flat", "project:6")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_problems(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A conv of drawn geometry between a plain conv and a linear head, with a batch that fits it."""
    groups = draw(st.sampled_from([1, 2, 3]))
    channels_in = groups * draw(st.integers(1, 3))
    channels_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    mode = draw(st.sampled_from(["zeros", "reflect", "circular"]))
    # reflect padding needs pad < size: a smaller image is torch's input error, not the engine's
    size = draw(st.integers(max(dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1), *padding) + 2, 7))
    batch = draw(st.integers(1, 5))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    conv = nn.Conv2d(channels_in, channels_out, kernel, stride, padding, dilation, groups,
                     bias=draw(st.booleans()), padding_mode=mode)
    body = nn.Sequential(nn.Conv2d(2, channels_in, 1), nn.Tanh(), conv, nn.Tanh(), nn.Flatten())
    with torch.no_grad():
        width = body(torch.zeros(1, 2, size, size)).shape[1]
    model = nn.Sequential(*body, nn.Linear(width, 3)).double().eval()
    x = torch.randn(batch, 2, size, size, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (batch,))


@st.composite
def token_problems(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A Linear over (B, T, features) tokens (T drawn, possibly equal to the batch) and a head."""
    tokens, batch = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    features, hidden = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    torch.manual_seed(draw(st.integers(0, 2**16)))

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(features, hidden, bias=draw(st.booleans()))
            self.head = nn.Linear(hidden, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.fc(x)).mean(dim=1))

    model = Tokens().double().eval()
    return model, torch.randn(batch, tokens, features, dtype=torch.float64), torch.randint(0, 3, (batch,))


def _all_engines_equal_the_naive_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reduction: str) -> None:
    layers = [n for n, _ in model.named_parameters()]
    reduce = parse_reduction(reduction, seed=2)
    for engine in ("hooks", "vmap", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", HooksFallbackWarning)  # every drawn shape takes the fast path
            assert_engine_equals_naive(model, x, y, engine, layers, reduce, rtol=1e-7, chunk_size=2)


@SETTINGS
@given(conv_problems(), st.sampled_from(REDUCTIONS))
def test_conv_geometries(problem: tuple[nn.Module, torch.Tensor, torch.Tensor], reduction: str) -> None:
    _all_engines_equal_the_naive_loop(*problem, reduction)


@SETTINGS
@given(token_problems(), st.sampled_from(REDUCTIONS))
def test_token_linears(problem: tuple[nn.Module, torch.Tensor, torch.Tensor], reduction: str) -> None:
    _all_engines_equal_the_naive_loop(*problem, reduction)
