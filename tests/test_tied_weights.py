"""A weight tied between two layers (`head.weight = encode.weight`) is one parameter: layer setups name it by the
name `named_parameters()` gives it whichever name selects it, and every engine's per-sample gradient is the
naive loop's, the sum over both uses."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.errors import UnsupportedModelError
from gmint.features.engine import ENGINES, choose_engine
from gmint.features.engine.hooks import HooksFallbackWarning
from gmint.features.engine.naive import naive_gradients
from gmint.features.extract import Rows, extract
from gmint.features.layers import LAYER_PRESETS, parameter_aliases, preset_parameters, resolve_parameters, weight_layers
from gmint.features.reduce import parse_reduction
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel
from tests.cli_runner import import_state_dict, run
from tests.naive import naive_mean
from tests.problems import Problem


class TiedDigits(nn.Module):
    """A digits classifier (1×8×8 → 10) whose output Linear shares the weight of a hidden Linear of its shape:
    `named_parameters()` lists that weight once, as `encode.weight`, and `head.weight` is its other name."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.proj = nn.Linear(2 * 8 * 8, 12)
        self.encode = nn.Linear(12, 10)
        self.decode = nn.Linear(10, 12)
        self.head = nn.Linear(12, 10)
        self.head.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.proj(torch.relu(self.stem(x)).flatten(1)))
        return self.head(torch.tanh(self.decode(torch.tanh(self.encode(h)))))


TIED = Problem("tied", TiedDigits, (1, 8, 8), num_classes=10)
WEIGHTS = ["stem.weight", "proj.weight", "encode.weight", "decode.weight"]  # forward order, the tied one once
# What each setup selects: presets over the four weights above, and the tied weight by either of its names.
SETUPS = {"entry": ["stem.weight"], "middle": ["encode.weight"], "output": ["decode.weight"],
          "combined": ["stem.weight", "encode.weight", "decode.weight"],
          "encode.weight": ["encode.weight"], "head.weight": ["encode.weight"],
          "head.*": ["encode.weight", "head.bias"]}


def test_a_tied_weight_is_listed_once_by_its_canonical_name() -> None:
    model, x, _ = TIED.make()
    assert parameter_aliases(model) == {"head.weight": "encode.weight"}
    assert weight_layers(model, x) == WEIGHTS
    assert weight_layers(model) == WEIGHTS  # registration order: the tie's first registration is encode
    assert preset_parameters(model, x) == {p: SETUPS[p] for p in LAYER_PRESETS.names()}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_every_setup_resolves_to_canonical_names(setup: str) -> None:
    model, x, _ = TIED.make()
    assert resolve_parameters(model, setup, x) == SETUPS[setup]


def test_the_naive_loop_sums_the_gradients_of_both_uses() -> None:
    """Ground truth for the tie: the tied weight's gradient is the sum of the two gradients the same model
    has with the weight untied (two equal copies, one per layer)."""
    model, x, y = TIED.make()
    untied = copy.deepcopy(model)
    assert isinstance(untied, TiedDigits)
    untied.head.weight = nn.Parameter(untied.encode.weight.detach().clone())
    tied, _, _ = naive_gradients(model, ["encode.weight"], x, y)
    apart, _, _ = naive_gradients(untied, ["encode.weight", "head.weight"], x, y)
    torch.testing.assert_close(tied["encode.weight"], apart["encode.weight"] + apart["head.weight"])
    assert apart["head.weight"].abs().amax() > 0.1 * apart["encode.weight"].abs().amax()  # both uses count


@pytest.mark.parametrize("engine", ["vmap", "hooks", "auto"])
@pytest.mark.parametrize("setup", ["combined", "entry", "head.weight", "head.*"])
def test_engines_equal_the_naive_loop_on_a_tied_model(engine: str, setup: str) -> None:
    model, x, y = TIED.make()
    layers = resolve_parameters(model, setup, x)
    flat = parse_reduction("flat")
    ref = ENGINES.get("naive")(model, layers, flat, x, y)
    tied = "encode.weight" in layers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if engine == "auto":
            choice, got = choose_engine(model, layers, flat, x, y)
            # hooks would leave the tied weight to vmap, so auto takes one vmap pass; without it, hooks.
            assert choice.engine == ("vmap" if tied else "hooks") and choice.trials[-1].passed
        else:
            got = ENGINES.get(engine)(model, layers, flat, x, y)
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, HooksFallbackWarning)]
    assert fallbacks == (["hooks engine: encode.weight computed with the vmap engine: the parameter is shared with "
                          "head (tied), so its gradient sums the uses of 2 modules"]
                         if tied and engine == "hooks" else [])
    for name in layers:
        torch.testing.assert_close(got.features[name], ref.features[name], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.loss, ref.loss)


def test_an_engine_given_the_other_name_of_a_tied_weight_names_the_canonical_one() -> None:
    model, x, y = TIED.make()
    with pytest.raises(UnsupportedModelError, match=r"'head.weight' \(tied: name it 'encode.weight'\)"):
        ENGINES.get("vmap")(model, ["head.weight"], parse_reduction("mean"), x, y)


PLAIN = {"size": None, "mean": [0.0], "std": [1.0]}


def test_extraction_stores_the_tied_weight_under_its_canonical_name(tmp_path: Path, digits: ImageSet) -> None:
    torch.manual_seed(0)
    module = TiedDigits().eval()
    rows = Rows(np.arange(24, dtype=np.int64), np.zeros(24, np.int8), np.zeros(24, np.int8))
    audited = AuditedModel(module, {"arch": "custom", "num_classes": 10, "transform": PLAIN})
    extract(audited, digits, rows,
            ExtractSettings(layer_setup="head.weight,entry", engine="auto", batch_size=12,
                            transform=Transform.from_dict(PLAIN)),
            out=tmp_path / "s.h5")
    with FeatureStore.open(tmp_path / "s.h5") as store:
        assert store.layers == ["stem.weight", "encode.weight"]
        assert store.provenance["engine_used"] == "vmap"
        assert store.provenance["layer_presets"]["middle"] == ["encode.weight"]  # type: ignore[index]
        ids = store.column("sample_id")
        got = {n: store.features([n]) for n in store.layers}
    ref = naive_mean(module, digits, ids, Transform.from_dict(PLAIN), list(got))
    for name, expected in ref.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-7)


def test_cli_lists_a_tied_weight_once_by_its_canonical_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(TiedDigits().state_dict(), tmp_path / "sd.pt")
    listed = run("layers", "--model", tmp_path / "sd.pt", "--arch", "tests.test_tied_weights:TiedDigits",
                 "--data", "digits", "--json")
    assert listed.code == 0, listed.stderr
    found = json.loads(listed.stdout)["layers"]
    assert {layer["parameter"]: layer["presets"] for layer in found} == {
        "stem.weight": ["combined", "entry"], "proj.weight": [], "encode.weight": ["combined", "middle"],
        "decode.weight": ["combined", "output"]}
    assert [layer["parameter"] for layer in found] == WEIGHTS


def test_cli_extracts_a_tied_model_selected_by_its_other_name(tmp_path: Path, digits: ImageSet) -> None:
    torch.manual_seed(0)
    module = TiedDigits().eval()
    torch.save(module.state_dict(), tmp_path / "sd.pt")
    assert run("split", "--data", "digits", "--members", "20", "--external", "20",
               "--out", tmp_path / "split.json").code == 0
    model = import_state_dict(tmp_path / "sd.pt", "tests.test_tied_weights:TiedDigits", tmp_path / "model.pt")
    done = run("extract", "--model", model, "--data", "digits", "--split", tmp_path / "split.json",
               "--layers", "head.weight,output",
               "--out", tmp_path / "f.h5")
    assert done.code == 0 and "Traceback" not in done.stderr, done.stderr
    with FeatureStore.open(tmp_path / "f.h5") as store:
        assert store.layers == ["encode.weight", "decode.weight"]
        ids = store.column("sample_id")
        got = {n: store.features([n]) for n in store.layers}
        transform = Transform.from_dict(store.provenance["transform"])  # type: ignore[arg-type]
    ref = naive_mean(module, digits, ids, transform, list(got))
    for name, expected in ref.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-7)
