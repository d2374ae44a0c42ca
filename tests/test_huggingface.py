"""A Hugging Face `transformers` image classifier trained outside gmint, audited end to end and offline: a tiny
ViT built from its config (no hub download), trained in plain PyTorch on some digits, imported with `gmint model
import` (its `ImageClassifierOutput` read at `logits`), then split from its own member list, extracted, trained
on and evaluated with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.transforms import Transform
from gmint.features.store import FeatureStore
from tests.cli_runner import run
from tests.naive import naive_mean

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'gmint[hf]')")

# The tiny ViT: 8x8 grey digits cut into four 4x4 patches, one encoder layer, 10 classes (~2.8k parameters).
CONFIG = {"image_size": 8, "patch_size": 4, "num_channels": 1, "hidden_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10}
FACTORY = '''"""The user's code: builds the Hugging Face model from its config, nothing downloaded."""
from transformers import ViTConfig, ViTForImageClassification


def build(**config):
    return ViTForImageClassification(ViTConfig(**config))
'''
TRANSFORM = Transform(size=8, mean=(0.5,), std=(0.5,), channels=1)  # x = (pixel / 255 - 0.5) / 0.5
MEMBERS = list(range(0, 400, 2))  # the rows the model is trained on
EXTERNAL = list(range(1, 400, 2))  # rows it never sees


class LogitsOnly(transformers.ViTForImageClassification):
    """The same ViT (same parameter names, same state dict) returning its logits as a tensor, as the user's
    training loop and the reference loop read them."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values=pixel_values).logits


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub access: the variables users set, and the flag huggingface_hub read from them at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)


def _train_vit(digits: ImageSet) -> LogitsOnly:
    """150 steps of full-batch Adam on the members only: it fits them (accuracy 1.0) far better than the
    externals (about 0.78)."""
    torch.manual_seed(0)
    model = LogitsOnly(transformers.ViTConfig(**CONFIG))
    x, y = TRANSFORM(digits.images[MEMBERS]), torch.from_numpy(digits.labels[MEMBERS])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


def test_a_vit_from_transformers_is_imported_extracted_and_audited(tmp_path: Path, digits: ImageSet,
                                                                     offline: None) -> None:
    model = _train_vit(digits)
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    (tmp_path / "hfmodels.py").write_text(FACTORY)

    imported = run("model", "import", tmp_path / "vit.pt", "--arch", f"{tmp_path / 'hfmodels.py'}:build",
                   "--arch-args", json.dumps(CONFIG), "--image-size", 8, "--channels", 1, "--mean", 0.5, "--std", 0.5,
                   "--classes", ",".join(digits.classes), "--out", tmp_path / "model.pt")
    assert imported.code == 0, imported.stderr
    shown = run("model", "show", tmp_path / "model.pt", "--json")
    assert shown.code == 0, shown.stderr
    description = json.loads(shown.stdout)
    assert description["output"] == "key:logits"  # the ImageClassifierOutput, read at its logits
    assert description["num_classes"] == 10 and description["input"] == {"channels": 1, "size": 8}

    (tmp_path / "members.json").write_text(json.dumps(MEMBERS))
    (tmp_path / "external.json").write_text(json.dumps(EXTERNAL))
    split = run("split", "--data", "digits", "--members-list", tmp_path / "members.json",
                "--external-list", tmp_path / "external.json", "--out", tmp_path / "split.json")
    assert split.code == 0, split.stderr

    store_path = tmp_path / "f.h5"
    extracted = run("extract", "--model", tmp_path / "model.pt", "--data", "digits", "--split", tmp_path / "split.json",
                    "--model-trained-outside-gmint", "--layers", "combined", "--out", store_path)
    assert extracted.code == 0 and "Traceback" not in extracted.stderr, extracted.stderr
    with FeatureStore.open(store_path) as store:
        layers, ids, membership = store.layers, store.column("sample_id"), store.column("membership")
        rows = np.concatenate([np.flatnonzero(membership == 1)[:3], np.flatnonzero(membership == 0)[:3]])
        got = {name: store.features([name], rows=rows) for name in layers}
        check = store.provenance["model_check"]
    assert sorted(ids[membership == 1]) == MEMBERS and sorted(ids[membership == 0]) == EXTERNAL
    assert len(layers) == 3 and len(rows) == 6  # combined: entry, middle and output weights; 3 members, 3 externals
    expected = naive_mean(model, digits, ids[rows], TRANSFORM, layers)
    for name in layers:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)

    assert isinstance(check, dict), check
    assert check["warnings"] == [], check["warnings"]
    assert check["members"]["accuracy"] >= check["external"]["accuracy"], check

    trained = run("train", store_path, "--kind", "mlp", "--out", tmp_path / "mint.pt")
    assert trained.code == 0, trained.stderr
    evaluated = run("eval", tmp_path / "mint.pt", store_path, "--json", "--n-boot", 50)
    assert evaluated.code == 0, evaluated.stderr
