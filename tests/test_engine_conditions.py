"""Model shapes where a fast path would store wrong Weight Modifiers: `auto` and `hooks` must equal the naive
loop (the per-sample definition) on each, by checking their conditions on the model or by falling back,
and every engine must leave the user's model exactly as it was."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.errors import InputError, UnsupportedModelError
from gmint.features.engine import ENGINES, choose_engine
from gmint.features.engine.agreement import ROUNDING_LIMIT
from gmint.features.engine.formulas import GRAD_FORMULAS, layer_key
from gmint.features.engine.hooks import HooksFallbackWarning, plan_hooks
from gmint.features.engine.selfcheck import EngineCheckWarning
from gmint.features.extract import Rows, extract
from gmint.features.layers import preset_parameters, resolve_parameters, weight_layers
from gmint.features.reduce import parse_reduction
from gmint.features.settings import ExtractSettings
from gmint.features.sources import SOURCES
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from tests.cli_runner import import_state_dict, run
from tests.naive import assert_engine_equals_naive
from tests.problems import Problem

# The Linear MEAN shortcut, patched by the tests that plant a wrong engine.
LINEAR_REDUCERS = GRAD_FORMULAS.get(layer_key(nn.Linear)).reducers


class FunctionalReuseLinear(nn.Module):
    """fc's weight is applied by fc and again through F.linear: a hook on fc sees only the first use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(x))
        return self.head(torch.tanh(F.linear(h, self.fc.weight)))


class FunctionalReuseConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        return self.head(torch.tanh(F.conv2d(h, self.conv.weight, padding=1)).flatten(1))


class SequenceFirst(nn.Module):
    """nn.TransformerEncoderLayer in its default (tokens, batch, features) layout, 6 tokens: with a batch of
    6, dimension 0 of every encoder Linear's input has the batch size without being the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.view(x.shape[0], 6, 4)).transpose(0, 1)
        return self.head(self.encoder(h).mean(dim=0))


class BatchStatistics(nn.Module):
    """BatchNorm without running statistics normalises with the batch's own, in eval mode too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4, track_running_stats=False)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


class OutputHook(nn.Module):
    """A user's forward hook replaces fc's output (×2 + 1) before the rest of the model sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.fc.register_forward_hook(lambda module, args, out: out * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(x)))


class KeywordInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(input=x)))


class ChannelsLastInside(nn.Module):
    """Converts its input to channels_last, which torch.func's vmap cannot do; a LayerNorm on the conv
    output has no hook formula, so selecting it forces a per-sample fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.head(torch.relu(self.norm(h)).flatten(1))


class Aliased(nn.Module):
    """One Linear registered under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)
        self.alias = self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(x)))


def _make(build: Callable[[], nn.Module], shape: tuple[int, ...], batch: int = 6
          ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model as a shared `Problem` of three classes: float64, eval mode, seeded batch and labels."""
    return Problem(build.__name__, build, shape, num_classes=3).make(batch)


def _weights(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.dim() >= 2 and "in_proj" not in n]


CASES = [
    ("functional-reuse-linear", FunctionalReuseLinear, (6,), "outside it"),
    ("functional-reuse-conv", FunctionalReuseConv, (3, 5, 5), "outside it"),
    ("sequence-first-tokens-equal-batch", SequenceFirst, (24,), "does not carry the batch on dimension 0"),
    ("batchnorm-without-running-stats", BatchStatistics, (3, 5, 5), "mix samples"),
]


@pytest.mark.parametrize("engine", ["auto", "hooks"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_fast_path_conditions_are_checked_on_the_model(case: tuple, engine: str) -> None:
    _, build, shape, _ = case
    model, x, y = _make(build, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HooksFallbackWarning)  # announced: see the next test
        assert_engine_equals_naive(model, x, y, engine, _weights(model), parse_reduction("abs_mean"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_hooks_says_why_it_falls_back(case: tuple) -> None:
    _, build, shape, reason = case
    model, x, y = _make(build, shape)
    plan = plan_hooks(model, _weights(model), x)
    assert reason in (plan.unusable or "") + " ".join(plan.fallback.values())
    with pytest.warns(HooksFallbackWarning, match=reason):
        ENGINES.get("hooks")(model, _weights(model), parse_reduction("mean"), x, y)


def test_batch_dimension_is_found_by_two_batch_sizes_not_by_one() -> None:
    """Batch 6 = 6 tokens passed the old single-size check; the two probe sizes tell them apart, and a
    batch-first model keeps the fast path."""
    model, x, _ = _make(SequenceFirst, (24,))
    plan = plan_hooks(model, ["encoder.linear1.weight", "embed.weight", "head.weight"], x)
    assert set(plan.fallback) == {"encoder.linear1.weight"}


def test_mixing_model_stores_each_samples_own_loss() -> None:
    model, x, y = _make(BatchStatistics, (3, 5, 5))
    reduce = parse_reduction("mean")
    ref = ENGINES.get("naive")(model, ["conv.weight"], reduce, x, y)
    choice, got = choose_engine(model, ["conv.weight"], reduce, x, y)
    assert choice.engine == "vmap"
    torch.testing.assert_close(got.loss, ref.loss)
    for source in ("activation", "output"):
        with pytest.raises(UnsupportedModelError, match="mix samples"):
            SOURCES.get(source)(model, ["conv.weight"], reduce, x, y)


@pytest.mark.parametrize("engine", ["auto", "hooks"])
def test_forward_hook_replacing_the_output_keeps_the_fast_path_exact(engine: str) -> None:
    model, x, y = _make(OutputHook, (6,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", HooksFallbackWarning)
        assert_engine_equals_naive(model, x, y, engine, ["fc.weight", "fc.bias", "head.weight"],
                                   parse_reduction("mean"))


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap", "naive"])
def test_layer_called_with_input_keyword(engine: str) -> None:
    model, x, y = _make(KeywordInput, (6,))
    assert_engine_equals_naive(model, x, y, engine, ["fc.weight", "head.weight"], parse_reduction("mean"))


def test_channels_last_inside_forward_falls_back_to_the_naive_loop() -> None:
    model, x, y = _make(ChannelsLastInside, (3, 5, 5))
    layers = ["conv.weight", "norm.weight", "head.weight"]
    reduce = parse_reduction("mean")
    with pytest.raises(RuntimeError, match="memory_format"):
        ENGINES.get("vmap")(model, layers, reduce, x, y)
    with pytest.warns(EngineCheckWarning, match="vmap engine passed over for naive: failed"):
        choice, got = choose_engine(model, layers, reduce, x, y)
    assert choice.engine == "naive"
    assert [(t.engine, t.passed) for t in choice.trials] == [("vmap", False), ("naive", True)]
    assert_engine_equals_naive(model, x, y, "auto", layers, reduce)
    assert_engine_equals_naive(model, x, y, "auto", ["conv.weight", "head.weight"], reduce)  # hooks can


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap", "naive"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int64])
def test_integer_labels_of_any_width(engine: str, dtype: torch.dtype) -> None:
    model, x, y = _make(KeywordInput, (6,))
    reduce = parse_reduction("mean")
    ref = ENGINES.get("naive")(model, ["fc.weight"], reduce, x, y)
    got = ENGINES.get(engine)(model, ["fc.weight"], reduce, x, y.to(dtype))
    torch.testing.assert_close(got.features["fc.weight"], ref.features["fc.weight"])


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap", "naive"])
def test_float_labels_are_refused(engine: str) -> None:
    model, x, y = _make(KeywordInput, (6,))
    with pytest.raises(InputError, match="labels must be integers"):
        ENGINES.get(engine)(model, ["fc.weight"], parse_reduction("mean"), x, y.double())


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap", "naive"])
def test_frozen_layers_are_audited_and_stay_frozen(engine: str) -> None:
    model, x, y = _make(KeywordInput, (6,))
    reference = ENGINES.get("naive")(model, ["fc.weight"], parse_reduction("flat"), x, y)
    model.requires_grad_(False)
    got = ENGINES.get(engine)(model, ["fc.weight"], parse_reduction("flat"), x, y)
    torch.testing.assert_close(got.features["fc.weight"], reference.features["fc.weight"])
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap"])
@pytest.mark.parametrize("chunk_size", [0, -1])
def test_chunk_size_must_be_positive(engine: str, chunk_size: int) -> None:
    model, x, y = _make(KeywordInput, (6,))
    with pytest.raises(InputError, match="chunk size must be a positive"):
        ENGINES.get(engine)(model, ["fc.weight"], parse_reduction("flat"), x, y, chunk_size=chunk_size)


def _snapshot(model: nn.Module) -> list[tuple]:
    """Everything an engine could disturb: each module slot's tensor object, flags, values and hooks."""
    rows: list[tuple] = []
    for name, module in model.named_modules(remove_duplicate=False):
        rows.append((name, module.training, tuple(module._forward_hooks.items()),
                     tuple(module._forward_pre_hooks.items()), tuple(module._backward_hooks.items())))
        for slot, tensor in [*module._parameters.items(), *module._buffers.items()]:
            rows.append((name, slot, id(tensor), type(tensor), tensor is not None and tensor.requires_grad,
                         None if tensor is None else tensor.detach().clone(), None if tensor is None else tensor.grad))
    return rows


def _same(before: list[tuple], after: list[tuple]) -> bool:
    if len(before) != len(after):
        return False
    for a, b in zip(before, after, strict=True):
        for u, v in zip(a, b, strict=True):
            if isinstance(u, torch.Tensor) or isinstance(v, torch.Tensor):
                if not (isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor) and torch.equal(u, v)):
                    return False
            elif u != v:
                return False
    return True


@pytest.mark.parametrize("engine", ["auto", "hooks", "vmap", "naive"])
@pytest.mark.parametrize("build", [Aliased, OutputHook, BatchStatistics, SequenceFirst], ids=lambda b: b.__name__)
def test_model_is_bit_identical_after_extraction(engine: str, build: Callable[[], nn.Module]) -> None:
    model, x, y = _make(build, (24,) if build is SequenceFirst else (3, 5, 5) if build is BatchStatistics else (6,))
    model.get_submodule(_weights(model)[0].rpartition(".")[0]).weight.requires_grad_(False)  # one frozen layer
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ENGINES.get(engine)(model, _weights(model), parse_reduction("mean"), x, y)
    assert _same(before, _snapshot(model))
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())


def test_aliased_module_keeps_its_trainable_parameters() -> None:
    model, x, y = _make(Aliased, (6,))
    ENGINES.get("hooks")(model, ["fc.weight", "head.weight"], parse_reduction("mean"), x, y)
    assert [(n, type(p), p.requires_grad) for n, p in model.named_parameters()] == [
        ("fc.weight", nn.Parameter, True), ("fc.bias", nn.Parameter, True),
        ("head.weight", nn.Parameter, True), ("head.bias", nn.Parameter, True)]


def test_presets_order_weights_by_first_use_not_by_module_call() -> None:
    model, x, y = _make(DigitsAttention, (1, 8, 8))
    assert weight_layers(model, x) == ["embed.weight", "attn.out_proj.weight", "head.weight"]
    assert resolve_parameters(model, "output", x) == ["head.weight"]
    assert preset_parameters(model, x)["middle"] == ["attn.out_proj.weight"]
    assert_engine_equals_naive(model, x, y, "auto", resolve_parameters(model, "combined", x), parse_reduction("mean"))


def test_presets_skip_weights_the_forward_never_uses() -> None:
    class Spare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 3)
            self.unused = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    model, x = Spare(), torch.randn(2, 4)
    assert weight_layers(model, x) == ["body.weight", "head.weight", "unused.weight"]
    assert resolve_parameters(model, "output", x) == ["head.weight"]


def test_self_check_catches_a_wrong_formula_and_records_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong in the fast path, the first batch's check against the naive loop notices."""
    model, x, y = _make(KeywordInput, (6,))
    reduce = parse_reduction("mean")
    right = LINEAR_REDUCERS["mean"]
    monkeypatch.setitem(LINEAR_REDUCERS, "mean", lambda layer, a, g: right(layer, a, g) * 1.01)
    with pytest.warns(EngineCheckWarning, match="hooks engine passed over for vmap: differs from the naive loop"):
        choice, got = choose_engine(model, ["fc.weight", "head.weight"], reduce, x, y)
    assert choice.engine == "vmap"
    hooks_trial = choice.provenance()["engine_check"]["trials"][0]  # type: ignore[index]
    assert hooks_trial["engine"] == "hooks" and not hooks_trial["passed"]
    assert 1e-3 < hooks_trial["max_error"] < 0.1
    ref = ENGINES.get("naive")(model, ["fc.weight", "head.weight"], reduce, x, y)
    torch.testing.assert_close(got.features["fc.weight"], ref.features["fc.weight"])


def _linear_mean_scaled_in_float32(monkeypatch: pytest.MonkeyPatch, factor: float) -> None:
    """The hooks formula for Linear MEAN, off by `factor` in float32 only: rounding, as a deep float32 net's
    batched sums give, where the formula itself is right."""
    right = LINEAR_REDUCERS["mean"]
    monkeypatch.setitem(LINEAR_REDUCERS, "mean",
                        lambda layer, a, g: right(layer, a, g) * (factor if a.dtype == torch.float32 else 1.0))


def _float32(build: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = _make(build, shape)
    return model.float(), x.float(), y


def test_float32_rounding_past_the_tolerance_is_kept_once_float64_proves_the_formula(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _float32(KeywordInput, (6,))
    _linear_mean_scaled_in_float32(monkeypatch, 1.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineCheckWarning)  # kept: no engine is passed over
        choice, got = choose_engine(model, ["fc.weight", "head.weight"], parse_reduction("mean"), x, y)
    assert choice.engine == "hooks"
    (trial,) = choice.trials
    assert trial.passed and trial.max_error is not None
    assert choice.tolerance < trial.max_error <= ROUNDING_LIMIT
    assert trial.float64_error is not None and trial.float64_error < 1e-12
    assert trial.note.startswith("rounding: differs from the naive loop by") and "in float64 by" in trial.note
    recorded = choice.provenance()["engine_check"]["trials"][0]  # type: ignore[index]
    assert recorded["float64_error"] == trial.float64_error and recorded["passed"]


def test_float32_error_beyond_rounding_is_refused_though_float64_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _float32(KeywordInput, (6,))
    _linear_mean_scaled_in_float32(monkeypatch, 1.2)
    with pytest.warns(EngineCheckWarning, match="hooks engine passed over for vmap: .*in float64 by"):
        choice, got = choose_engine(model, ["fc.weight", "head.weight"], parse_reduction("mean"), x, y)
    hooks_trial = choice.trials[0]
    assert choice.engine == "vmap" and not hooks_trial.passed
    assert hooks_trial.max_error is not None and hooks_trial.max_error > ROUNDING_LIMIT
    assert hooks_trial.float64_error is not None and hooks_trial.float64_error < 1e-12


def test_a_formula_wrong_in_float64_too_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _float32(KeywordInput, (6,))
    right = LINEAR_REDUCERS["mean"]
    monkeypatch.setitem(LINEAR_REDUCERS, "mean", lambda layer, a, g: right(layer, a, g) * 1.01)
    with pytest.warns(EngineCheckWarning, match="hooks engine passed over for vmap"):
        choice, got = choose_engine(model, ["fc.weight", "head.weight"], parse_reduction("mean"), x, y)
    hooks_trial = choice.trials[0]
    assert choice.engine == "vmap" and not hooks_trial.passed
    assert hooks_trial.float64_error is not None and hooks_trial.float64_error > 1e-4
    ref = ENGINES.get("naive")(model, ["fc.weight", "head.weight"], parse_reduction("mean"), x, y)
    torch.testing.assert_close(got.features["fc.weight"], ref.features["fc.weight"], rtol=1e-4, atol=1e-6)


def test_self_check_passes_a_correct_engine_with_room_to_spare() -> None:
    model, x, y = _make(SequenceFirst, (24,))
    choice, _ = choose_engine(model, ["embed.weight", "head.weight"], parse_reduction("mean"), x, y)
    assert choice.engine == "hooks"
    (trial,) = choice.trials
    assert trial.passed and trial.max_error is not None and trial.max_error < 1e-12 < choice.tolerance
    assert choice.rows[0] == 0 and choice.rows[-1] == len(x) - 1 and len(choice.rows) == 4


class DigitsFunctionalReuse(nn.Module):
    """A digits classifier (1×8×8) whose hidden weight is also applied functionally."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(torch.relu(self.conv(x)).flatten(1)))
        return self.head(torch.tanh(h + 0.1 * F.linear(h, self.fc.weight[:, :16])))


PLAIN = {"size": None, "mean": [0.0], "std": [1.0]}


def _extract_digits(out: Path, digits: ImageSet, module: nn.Module, engine: str, layers: str
                    ) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Extract 40 digits rows with a user model; the store's provenance and features."""
    rows = Rows(np.arange(40, dtype=np.int64), np.zeros(40, np.int8), np.zeros(40, np.int8))
    audited = AuditedModel(module.eval(), {"arch": "custom", "num_classes": 10, "transform": PLAIN})
    extract(audited, digits, rows, ExtractSettings(layer_setup=layers, engine=engine, batch_size=16), out=out)
    with FeatureStore.open(out) as store:
        return store.provenance, {n: store.features([n]) for n in store.layers}


@pytest.mark.parametrize("engine", ["auto", "hooks"])
def test_extraction_records_its_self_check_and_stores_exact_numbers(tmp_path: Path, digits: ImageSet,
                                                                    engine: str) -> None:
    torch.manual_seed(0)
    module = DigitsFunctionalReuse().eval()
    layers = ["fc.weight", "head.weight"]
    x = Transform.from_dict(PLAIN)(digits.images[:40])
    ref = ENGINES.get("naive")(module, layers, parse_reduction("mean"), x, torch.from_numpy(digits.labels[:40]))
    before = _snapshot(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HooksFallbackWarning)
        provenance, features = _extract_digits(tmp_path / "s.h5", digits, module, engine, ",".join(layers))
    assert _same(before, _snapshot(module))
    check = provenance["engine_check"]
    assert isinstance(check, dict) and provenance["engine"] == engine and check["reference"] == "naive"
    assert len(check["rows"]) == 4 and check["rows"][0] == 0 and check["tolerance"] > 0
    assert check["trials"][-1]["passed"] and check["trials"][-1]["engine"] == provenance["engine_used"]
    if engine == "hooks":  # hooks ran, with fc.weight from vmap, and says so
        assert provenance["engine_used"] == "hooks"
        assert "outside it" in provenance["engine_fallbacks"]["fc.weight"]  # type: ignore[index]
    else:                  # auto prefers one vmap pass to hooks plus a vmap fallback
        assert provenance["engine_used"] == "vmap"
    for name in layers:
        np.testing.assert_allclose(features[name], ref.features[name].numpy(), rtol=1e-4, atol=1e-7)


def test_extraction_passes_over_an_engine_that_fails_its_check(tmp_path: Path, digits: ImageSet,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    right = LINEAR_REDUCERS["mean"]
    monkeypatch.setitem(LINEAR_REDUCERS, "mean", lambda layer, a, g: right(layer, a, g) + 1e-3)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    with pytest.warns(EngineCheckWarning, match="hooks engine passed over for vmap"):
        provenance, _ = _extract_digits(tmp_path / "s.h5", digits, module, "auto", "combined")
    trials = provenance["engine_check"]["trials"]  # type: ignore[index]
    assert provenance["engine_used"] == "vmap"
    assert [(t["engine"], t["passed"]) for t in trials] == [("hooks", False), ("vmap", True)]


@pytest.mark.parametrize("engine", ["hooks", "vmap", "naive"])
def test_memorised_rows_keep_their_weight_modifiers_in_float32(engine: str) -> None:
    """A sample the model has memorised (loss ~1e-9) has p_y within float32's rounding of 1: a float32 loss
    rounds its output gradient to zero in the true class. Its Weight Modifier in float32 must still match
    a float64 model's to float32 precision."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[2].weight.mul_(30.0)
    x = torch.randn(8, 6)
    y = model(x).argmax(dim=1)                                 # every row "memorised"
    reduce, layers = parse_reduction("mean"), ["0.weight", "2.weight"]
    wide = ENGINES.get("naive")(copy.deepcopy(model).double(), layers, reduce, x.double(), y)
    assert (wide.loss < 1e-6).sum() >= 3
    got = ENGINES.get(engine)(model, layers, reduce, x, y)
    for name in layers:
        torch.testing.assert_close(got.features[name].double(), wide.features[name], rtol=1e-3, atol=0.0)
    torch.testing.assert_close(got.loss.double(), wide.loss, rtol=1e-3, atol=0.0)


class DigitsAttention(nn.Module):
    """A digits classifier (1×8×8 → 8 tokens of 8) with self-attention: `out_proj` is used, never called."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], 8, 8))
        h, _ = self.attn(h, h, h)
        return self.head(h.mean(dim=1))


def test_layers_and_extract_agree_on_an_attention_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(DigitsAttention().state_dict(), tmp_path / "sd.pt")
    model = ["--model", import_state_dict(tmp_path / "sd.pt", "tests.test_engine_conditions:DigitsAttention",
                                          tmp_path / "model.pt")]
    listed = run("layers", *model, "--data", "digits", "--json")
    assert listed.code == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["order"] == "forward"
    assert [layer["parameter"] for layer in found["layers"]] == ["embed.weight", "attn.out_proj.weight",
                                                                 "head.weight"]
    assert [layer["parameter"] for layer in found["layers"] if "output" in layer["presets"]] == ["head.weight"]
    assert run("split", "--data", "digits", "--members", "100", "--external", "100",
               "--out", tmp_path / "split.json").code == 0
    done = run("extract", *model, "--data", "digits", "--split", tmp_path / "split.json", "--layers", "combined",
               "--out", tmp_path / "f.h5")
    assert done.code == 0, done.stderr
    with FeatureStore.open(tmp_path / "f.h5") as store:
        chosen = store.provenance["layer_presets"]
        assert chosen == {p: [n["parameter"] for n in found["layers"] if p in n["presets"]]
                          for p in ("combined", "entry", "middle", "output")}
        assert store.provenance["parameters"] == ["embed.weight", "attn.out_proj.weight", "head.weight"]


def test_cli_says_in_one_line_which_engine_ran_and_why(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(DigitsFunctionalReuse().state_dict(), tmp_path / "sd.pt")
    assert run("split", "--data", "digits", "--members", "60", "--external", "60",
               "--out", tmp_path / "split.json").code == 0
    model = import_state_dict(tmp_path / "sd.pt", "tests.test_engine_conditions:DigitsFunctionalReuse",
                              tmp_path / "model.pt")
    done = run("extract", "--model", model, "--data", "digits", "--split", tmp_path / "split.json",
               "--layers", "fc.weight,head.weight",
               "--engine", "hooks", "--out", tmp_path / "f.h5")
    assert done.code == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["warning: hooks engine: fc.weight computed with the vmap engine: the parameter is used 1 "
                     "time(s) by fc and also outside it (__getitem__)"]
    with FeatureStore.open(tmp_path / "f.h5") as store:
        assert store.provenance["engine_used"] == "hooks"
        assert list(store.provenance["engine_fallbacks"]) == ["fc.weight"]  # type: ignore[arg-type]


def test_a_model_that_cannot_run_one_sample_is_refused_once_without_trying_engines() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 3)).eval()
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineCheckWarning)
        with pytest.raises(UnsupportedModelError, match="cannot be run on one sample alone"):
            choose_engine(model, ["0.weight"], parse_reduction("mean"), x, y)
        with pytest.raises(InputError, match="'bce' needs one output"):
            choose_engine(nn.Linear(6, 3).eval(), ["weight"], parse_reduction("mean"), x, y, loss="bce")
