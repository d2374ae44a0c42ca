"""The vmap engine equals a one-sample-at-a-time autograd loop, for every layer setup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine import ENGINES
from gmint.features.layers import LAYER_PRESETS, resolve_parameters
from gmint.features.reduce import REDUCTIONS, parse_reduction
from tests.problems import PROBLEMS, Problem


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).norm() / expected.norm().clamp_min(1e-30))


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
@pytest.mark.parametrize("setup", LAYER_PRESETS.names())
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_vmap_matches_naive_loop(problem: Problem, setup: str, chunk_size: int | None) -> None:
    model, x, y = problem.make()
    layers = resolve_parameters(model, setup, x)
    flat = parse_reduction("flat")
    ref = ENGINES.get("naive")(model, layers, flat, x, y)
    got = ENGINES.get("vmap")(model, layers, flat, x, y, chunk_size=chunk_size)
    for name in layers:
        assert got.features[name].shape == ref.features[name].shape
        assert relative_error(got.features[name], ref.features[name]) < 1e-5
    torch.testing.assert_close(got.loss, ref.loss)
    assert torch.equal(got.pred, ref.pred)


def test_naive_loop_is_the_gradient_of_one_sample() -> None:
    """Ground truth of the ground truth: the naive loop equals a by-hand gradient of one sample."""
    model, x, y = PROBLEMS[0].make()
    layers = ["4.weight"]
    got = ENGINES.get("naive")(model, layers, parse_reduction("flat"), x, y).features["4.weight"][2]
    loss = nn.functional.cross_entropy(model(x[2:3]), y[2:3])
    (expected,) = torch.autograd.grad(loss, [model[4].weight])
    torch.testing.assert_close(got, expected.flatten())


# `pool` pools activation maps: a Weight Modifier has none, and it is refused there (the test after this one).
@pytest.mark.parametrize("reduction", [r for r in REDUCTIONS.names() if r != "pool"])
def test_reductions_commute_with_engines(reduction: str) -> None:
    model, x, y = PROBLEMS[1].make()
    layers = resolve_parameters(model, "combined", x)
    reduce = parse_reduction(reduction if reduction != "project" else "project:8", seed=3)
    ref = ENGINES.get("naive")(model, layers, reduce, x, y)
    got = ENGINES.get("vmap")(model, layers, reduce, x, y, chunk_size=2)
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name], rtol=1e-5, atol=1e-10)


def test_pooling_a_weight_modifier_is_refused_in_one_line() -> None:
    model, x, y = PROBLEMS[1].make()
    layers = resolve_parameters(model, "entry", x)
    with pytest.raises(InputError, match=r"averages \(B, C, H, W\) activation maps"):
        ENGINES.get("vmap")(model, layers, parse_reduction("pool:2x2"), x, y)


def test_selected_parameters_only_are_differentiated() -> None:
    """Unselected parameters keep no gradient and the output holds only the selected layers."""
    model, x, y = PROBLEMS[2].make()
    got = ENGINES.get("vmap")(model, ["0.weight"], parse_reduction("mean"), x, y)
    assert list(got.features) == ["0.weight"]
    assert got.features["0.weight"].shape == (len(x), 4)
    assert all(p.grad is None for p in model.parameters())


def test_training_mode_is_refused() -> None:
    model, x, y = PROBLEMS[2].make()
    model.train()
    with pytest.raises(UnsupportedModelError, match="model.eval"):
        ENGINES.get("vmap")(model, ["0.weight"], parse_reduction("mean"), x, y)


def test_presets_follow_forward_order() -> None:
    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.body = nn.Linear(5, 4)
            self.stem = nn.Linear(6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(self.stem(x)))

    model, x = HeadFirst(), torch.randn(2, 6)
    assert resolve_parameters(model, "entry", x) == ["stem.weight"]
    assert resolve_parameters(model, "middle", x) == ["body.weight"]
    assert resolve_parameters(model, "output", x) == ["head.weight"]
    assert resolve_parameters(model, "combined", x) == ["stem.weight", "body.weight", "head.weight"]
    assert resolve_parameters(model, "*.bias,head.weight", x) == ["head.weight", "head.bias", "body.bias",
                                                              "stem.bias"]


def test_torchscript_models_run_on_the_naive_engine_and_vmap_says_why_not() -> None:
    model, x, y = PROBLEMS[2].make()
    scripted = torch.jit.script(model)
    layers = resolve_parameters(scripted, "combined", x)
    assert layers == resolve_parameters(model, "combined", x)
    got = ENGINES.get("naive")(scripted, layers, parse_reduction("mean"), x, y)
    ref = ENGINES.get("naive")(model, layers, parse_reduction("mean"), x, y)
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name])
    with pytest.raises(UnsupportedModelError, match="with the naive engine"):
        ENGINES.get("vmap")(scripted, layers, parse_reduction("mean"), x, y)


def test_auto_engine_takes_the_naive_loop_for_torchscript() -> None:
    from gmint.features.engine import choose_engine

    model, x, y = PROBLEMS[1].make()
    layers, mean = resolve_parameters(model, "combined", x), parse_reduction("mean")
    assert choose_engine(model, layers, mean, x, y)[0].engine == "hooks"
    assert choose_engine(torch.jit.script(model), layers, mean, x, y)[0].engine == "naive"
    got = ENGINES.get("auto")(torch.jit.script(model), layers, parse_reduction("mean"), x, y)
    ref = ENGINES.get("naive")(model, layers, parse_reduction("mean"), x, y)
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name])
