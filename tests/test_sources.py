"""Alternative feature sources write the same store format and hold the values they promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from gmint.assess.evaluate import evaluate_store
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.mint import train_mint
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig, train_audited


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet, digits_split: MembershipSplit,
           audited_digits: tuple[AuditedModel, Path]) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sources")
    return {source: extract(audited_digits[0], digits, split_rows(digits_split),
                            ExtractSettings(layer_setup="combined", source=source), out=out / f"{source}.h5",
                            split=digits_split)
            for source in ("activation", "output")}


def test_output_signals_match_the_model(stores: dict[str, Path], digits: ImageSet,
                                        audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[0].module
    with FeatureStore.open(stores["output"]) as store:
        assert store.layers == ["loss", "confidence", "entropy", "grad_norm"]
        ids = store.column("sample_id")[:20]
        feats = {n: store.features([n])[:20, 0] for n in store.layers}
        np.testing.assert_allclose(feats["loss"], store.column("loss")[:20], rtol=1e-6)
    x = Transform()(digits.images[ids])
    with torch.no_grad():
        logits = model(x)
    probs = logits.softmax(-1)
    np.testing.assert_allclose(feats["loss"], F.cross_entropy(logits, torch.from_numpy(digits.labels[ids]),
                                                              reduction="none").numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(feats["confidence"], probs.amax(-1).numpy(), rtol=1e-5)
    i = 3
    loss = F.cross_entropy(model(x[i:i + 1]), torch.from_numpy(digits.labels[ids[i:i + 1]]))
    params = dict(model.named_parameters())
    names = ["0.weight", "8.weight", "10.weight"]
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    expected = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert feats["grad_norm"][i] == pytest.approx(float(expected), rel=1e-4)


def test_activation_source_reduces_layer_outputs(stores: dict[str, Path], digits: ImageSet,
                                                 audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[0].module
    with FeatureStore.open(stores["activation"]) as store:
        assert store.layers == ["0.output", "8.output", "10.output"]
        ids = store.column("sample_id")[:10]
        got = store.features(["0.output"])[:10]
    with torch.no_grad():
        first = model[0](Transform()(digits.images[ids]))
    np.testing.assert_allclose(got, first.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_threshold_classifier_on_one_signal(stores: dict[str, Path]) -> None:
    """The direction comes from the pool; on held-out rows its AUC is the loss baseline's (or 1 − it)."""
    with FeatureStore.open(stores["output"]) as store:
        pool = store.column("role") == 0
        pool_auc = roc_auc_score(store.column("membership")[pool], store.column("loss")[pool])
    mint = train_mint(stores["output"], kind="threshold", setup="loss")
    smaller = pool_auc < 0.5
    assert mint.record["direction"] == ("smaller is member" if smaller else "larger is member")
    result = evaluate_store(mint, stores["output"], n_boot=0)
    baseline = result.loss_threshold["auc"].value
    assert result.mint["auc"].value == pytest.approx(baseline if smaller else 1 - baseline)
    with pytest.raises(InputError, match="one signal"):
        train_mint(stores["output"], kind="threshold", setup="all")


def test_negative_control_saw_neither_side(tmp_path: Path, digits: ImageSet) -> None:
    split = make_split(digits, members=0.4, external=0.4, control=0.2, seed=0)
    assert split.control and not set(split.control) & (set(split.members) | set(split.external))
    model = train_audited(digits, split, arch="small_cnn", transform=Transform(),
                          config=TrainConfig(epochs=1), out=tmp_path / "c.pt", trained_on="control",
                          arch_options={"width": 0.25})
    assert model.meta["trained_on"] == "control"
    with pytest.raises(InputError, match="no control rows"):
        train_audited(digits, make_split(digits, seed=0), arch="small_cnn", transform=Transform(),
                      config=TrainConfig(epochs=1), out=tmp_path / "d.pt", trained_on="control")
