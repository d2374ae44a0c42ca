"""The hooks engine equals the vmap engine and the naive loop, for every reduction × layer type, and falls
back to vmap (with a warning) exactly where its formulas would be wrong."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
from torch import nn

from gmint.errors import InputError
from gmint.features.engine import ENGINES, choose_engine
from gmint.features.engine.formulas import GRAD_FORMULAS, formulas_for, layer_key, register_formulas
from gmint.features.engine.hooks import DegenerateReductionWarning, HooksFallbackWarning, unsupported_parameters
from gmint.features.engine.memory import max_batch_for_memory
from gmint.features.reduce import parse_reduction
from tests.naive import assert_engine_equals_naive
from tests.problems import PROBLEMS as SHARED_PROBLEMS
from tests.problems import Problem

M = TypeVar("M", bound=nn.Module)
REDUCTIONS = ["mean", "abs_mean", "std", "l2", "max", "flat", "project:16"]
# How close the hooks engine must come to the naive loop in these float64 tests.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-10}


def _randomise_norms(model: M) -> M:
    """LayerNorm with random affine parameters, so MEAN after it is not degenerate."""
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model


class TokenBlock(nn.Module):
    """Transformer-like: token embedding, pre-LN residual MLP, mean pool, head. Linear layers see (B, T, d)."""

    def __init__(self, inputs: int = 6, dim: int = 8, hidden: int = 12, tokens_out: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, tokens_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.down(nn.functional.gelu(self.up(self.norm(h))))
        return self.head(h.mean(dim=1))


def _conv_net(conv: Callable[[], nn.Conv2d]) -> Callable[[], nn.Module]:
    """The conv under test between two plain ones (so it has a gradient in and out), then a head."""
    def build() -> nn.Module:
        layer = conv()
        body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), layer, nn.ReLU(),
                             nn.Conv2d(layer.out_channels, 3, 1), nn.Flatten())
        with torch.no_grad():
            features = body(torch.zeros(1, 4, 7, 7)).shape[1]
        return nn.Sequential(*body, nn.Linear(features, 5))
    return build


PROBLEMS = [
    SHARED_PROBLEMS[0],                                                       # Linear on 2-D input
    Problem("linear-3d-tokens", lambda: _randomise_norms(TokenBlock()), (4, 6)),
    SHARED_PROBLEMS[1],                                                       # conv, stride 2
    Problem("conv-stride2-pad-dilation2",
            _conv_net(lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)), (4, 7, 7)),
    Problem("conv-groups2", _conv_net(lambda: nn.Conv2d(4, 6, (3, 2), padding=1, groups=2)), (4, 7, 7)),
    Problem("conv-depthwise", _conv_net(lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4)), (4, 7, 7)),
    Problem("conv-no-bias", _conv_net(lambda: nn.Conv2d(4, 5, 3, bias=False)), (4, 7, 7)),
    Problem("conv-same-even-kernel",
            _conv_net(lambda: nn.Conv2d(4, 5, 4, padding="same", dilation=2)), (4, 7, 7)),
    Problem("conv-reflect-stride2",
            _conv_net(lambda: nn.Conv2d(4, 5, 3, stride=2, padding=1, padding_mode="reflect")), (4, 7, 7)),
    Problem("conv-inplace-relu", lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5)), (3, 5, 5)),
    SHARED_PROBLEMS[2],                                                       # BatchNorm in eval mode
]


def _hook_params(model: nn.Module) -> list[str]:
    """Every weight and bias of the model's Linear and Conv2d layers."""
    return [f"{mn}.{pn}" for mn, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)
            for pn, _ in m.named_parameters(recurse=False)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_hooks_matches_vmap_and_naive(problem: Problem, reduction: str) -> None:
    model, x, y = problem.make()
    layers = _hook_params(model)
    reduce = parse_reduction(reduction, seed=5)
    assert_engine_equals_naive(model, x, y, "vmap", layers, reduce, **TOLERANCE, chunk_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HooksFallbackWarning)     # the fast path, no fallback
        got = assert_engine_equals_naive(model, x, y, "hooks", layers, reduce, **TOLERANCE, chunk_size=4)
    assert got.features[layers[0]].dtype == torch.float64


@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "bce"])
def test_hooks_losses(loss: str) -> None:
    classes = 1 if loss == "bce" else 4
    final: list[nn.Module] = [nn.LogSoftmax(dim=1)] if loss == "nll" else []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, classes), *final).double().eval()
    x, y = torch.randn(5, 5, dtype=torch.float64), torch.randint(0, max(classes, 2), (5,))
    layers, reduce = _hook_params(model), parse_reduction("flat")
    assert_engine_equals_naive(model, x, y, "hooks", layers, reduce, **TOLERANCE, loss=loss)


class ModifiesInputInPlace(nn.Module):
    """The selected conv's input is changed in place after the conv ran: the captured activations are
    stale. Autograd itself refuses this model (the conv saved that input for its weight gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5 * 5 + 3 * 5 * 5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x)
        out = self.conv(h)
        h.mul_(2.0)
        return self.head(torch.cat([out.flatten(1), h.flatten(1)], dim=1))


class InPlaceOnTokenOutput(nn.Module):
    """A Linear on 3-D input returns a view; an in-place op on it re-routes autograd past the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 7)
        self.head = nn.Linear(7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(x).relu_().mean(dim=1))


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(torch.tanh(self.fc(x))))


class Embedded(nn.Module):
    """Embedding (no hook formula) and a LayerNorm; float inputs are binned into token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.norm = _randomise_norms(nn.LayerNorm(6))
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(x.abs().mul(3).long().clamp(0, 9))).mean(dim=1))


class TiedHead(nn.Module):
    """The head's weight is also a hidden layer's weight: a hook on one module misses the other use."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


FALLBACKS = [
    ("view-output-modified-in-place", InPlaceOnTokenOutput, (4, 6), ["fc.weight", "head.weight"],
     {"fc.weight"}, "a view"),
    ("module-called-twice", CalledTwice, (6,), ["fc.weight", "head.weight"], {"fc.weight"}, "2 times"),
    ("embedding-and-layernorm", Embedded, (4,), ["embed.weight", "norm.weight", "head.weight"],
     {"embed.weight", "norm.weight"}, "no hook formula"),
    ("tied-weights", TiedHead, (5,), ["a.weight", "a.bias", "b.bias"], {"a.weight"}, "shared"),
]


@pytest.mark.parametrize("case", FALLBACKS, ids=lambda c: c[0])
@pytest.mark.parametrize("reduction", ["mean", "l2", "flat"])
def test_fallback_to_vmap_is_exact_and_announced(case: tuple, reduction: str) -> None:
    _, build, shape, layers, expected_fallback, reason = case
    torch.manual_seed(0)
    model = build().double().eval()
    x = torch.randn(6, *shape, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    reduce = parse_reduction(reduction, seed=1)
    with pytest.warns(HooksFallbackWarning, match=reason) as record:
        assert_engine_equals_naive(model, x, y, "hooks", layers, reduce, **TOLERANCE, chunk_size=4)
    fallen = {str(w.message).split()[2] for w in record if w.category is HooksFallbackWarning}
    assert fallen == expected_fallback


def test_stale_input_is_not_used() -> None:
    """Hooks (whose graph does not save the input) must not return numbers from stale activations; it
    defers to vmap, which refuses the model as the naive loop does."""
    torch.manual_seed(0)
    model = ModifiesInputInPlace().double().eval()
    x, y = torch.randn(3, 3, 5, 5, dtype=torch.float64), torch.tensor([0, 1, 2])
    reduce = parse_reduction("mean")
    with pytest.raises(RuntimeError, match="inplace"):
        ENGINES.get("naive")(model, ["conv.weight"], reduce, x, y)
    with pytest.warns(HooksFallbackWarning, match="conv.weight .* modified in place"), \
            pytest.raises(RuntimeError, match="inplace"):
        ENGINES.get("hooks")(model, ["conv.weight", "head.weight"], reduce, x, y)


def test_auto_takes_vmap_for_unsupported_layers_and_hooks_otherwise() -> None:
    torch.manual_seed(0)
    model = Embedded().double().eval()
    x, y = torch.randn(4, 4, dtype=torch.float64), torch.randint(0, 5, (4,))
    reduce = parse_reduction("mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error", HooksFallbackWarning)
        assert_engine_equals_naive(model, x, y, "auto", ["norm.weight", "head.weight"], reduce, **TOLERANCE)
        assert_engine_equals_naive(model, x, y, "auto", ["head.weight", "head.bias"], reduce, **TOLERANCE)
    assert choose_engine(model, ["norm.weight", "head.weight"], reduce, x, y)[0].engine == "vmap"
    assert choose_engine(model, ["head.weight", "head.bias"], reduce, x, y)[0].engine == "hooks"


def test_mean_after_zero_mean_layernorm_warns() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 5)).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 5, (4,))
    with pytest.warns(DegenerateReductionWarning, match="2.weight"):
        ENGINES.get("hooks")(model.eval(), ["0.weight", "2.weight"], parse_reduction("mean"), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateReductionWarning)
        got = ENGINES.get("hooks")(model, ["2.weight"], parse_reduction("project:8"), x, y)
    assert got.features["2.weight"].abs().min() > 1e-6      # information kept where MEAN has none


def test_l2_takes_both_the_gram_and_the_materialised_path() -> None:
    """The Gram shortcut answers for small position counts and declines (None) for large ones."""
    torch.manual_seed(0)
    conv_l2 = GRAD_FORMULAS.get(layer_key(nn.Conv2d)).reducers["l2"]
    linear_l2 = GRAD_FORMULAS.get(layer_key(nn.Linear)).reducers["l2"]
    late, early = nn.Conv2d(8, 8, 3).double(), nn.Conv2d(2, 4, 3, padding=1).double()
    assert conv_l2(late, torch.randn(2, 8, 3, 3).double(), torch.randn(2, 8, 1, 1).double()) is not None
    assert conv_l2(early, torch.randn(2, 2, 6, 6).double(), torch.randn(2, 4, 6, 6).double()) is None
    linear = nn.Linear(8, 8)
    assert linear_l2(linear, torch.randn(2, 2, 8), torch.randn(2, 2, 8)) is not None
    assert linear_l2(linear, torch.randn(2, 9, 8), torch.randn(2, 9, 8)) is None


def test_formulas_are_looked_up_by_exact_layer_type() -> None:
    """A subclass may change `forward`, so it never takes its parent's formulas (its parameters go to vmap);
    a layer type registers once."""

    class Scaled(nn.Linear):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(input)

    assert formulas_for(nn.Linear(3, 2)) is GRAD_FORMULAS.get("torch.nn.modules.linear.Linear")
    assert formulas_for(Scaled(3, 2)) is None and formulas_for(nn.LayerNorm(3)) is None
    assert unsupported_parameters(nn.Sequential(Scaled(3, 2)), ["0.weight"]) == {
        "0.weight": "Scaled.weight has no hook formula"}
    with pytest.raises(ValueError, match="already registered"):
        register_formulas(nn.Linear)(formulas_for(nn.Linear(3, 2)))  # type: ignore[arg-type]


def test_model_state_is_untouched_and_frozen_models_work() -> None:
    model, x, y = SHARED_PROBLEMS[2].make()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = ["0.weight", "8.weight"]
    got = ENGINES.get("hooks")(model, layers, parse_reduction("flat"), x, y)
    for p in model.parameters():
        p.requires_grad_(True)
    ref = ENGINES.get("naive")(model, layers, parse_reduction("flat"), x, y)
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name], **TOLERANCE)
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_output_not_reaching_the_loss_has_zero_modifier() -> None:
    class SideBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Linear(4, 3)
            self.head = nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.side(x)
            return self.head(x)

    model, x = SideBranch().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    got = ENGINES.get("hooks")(model, ["side.weight", "head.weight"], parse_reduction("l2"), x,
                               torch.tensor([0, 1, 2]))
    assert torch.equal(got.features["side.weight"], torch.zeros(3, 3, dtype=torch.float64))


def test_training_mode_is_refused_by_hooks() -> None:
    from gmint.errors import UnsupportedModelError

    model, x, y = SHARED_PROBLEMS[2].make()
    with pytest.raises(UnsupportedModelError, match="model.eval"):
        ENGINES.get("hooks")(model.train(), ["0.weight"], parse_reduction("mean"), x, y)


def test_max_batch_for_memory_scales_with_the_budget() -> None:
    model, x, _ = SHARED_PROBLEMS[2].make()
    layers = ["0.weight", "3.weight", "8.weight"]
    mean, flat = parse_reduction("mean"), parse_reduction("flat")
    small = max_batch_for_memory(model, layers, mean, x, 2**20, chunk_size=None)
    large = max_batch_for_memory(model, layers, mean, x, 2**22, chunk_size=None)
    assert 1 <= small and 4 * small <= large < 4 * (small + 1)
    assert max_batch_for_memory(model, layers, flat, x, 2**20, chunk_size=None) <= small
    with pytest.raises(InputError, match=r"a memory budget of 64 B does not fit one sample \(about [0-9.]+ KiB\)"):
        max_batch_for_memory(model, layers, mean, x, 64)
    # Per-sample cost at least covers the activations of the backward region (float64, 5×5 maps).
    assert small <= 2**20 // (4 * 5 * 5 * 8 * 3)
