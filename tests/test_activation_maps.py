"""Activation maps as the MINT papers read them: module selection, the store against the forward pass, the map
CNN on every zoo family, label-aware and class-specific classifiers on activations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gmint.assess.evaluate import evaluate_store
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, UnknownNameError
from gmint.features.extract import extract, split_rows
from gmint.features.layers import model_blocks, module_presets, resolve_modules
from gmint.features.reduce import parse_reduction
from gmint.features.settings import ExtractSettings
from gmint.features.sources import map_shapes
from gmint.features.store import FeatureStore
from gmint.mint import MINT_MODELS, TrainedMint, train_mint
from gmint.mint.maps import MapCnnMint
from gmint.models.io import AuditedModel
from gmint.models.zoo import build

# One member of each zoo family, at test widths, on 32 px colour images.
FAMILIES = {"small_cnn": {"width": 0.25}, "mlp": {"width": 0.25}, "resnet18": {"width": 0.125},
            "resnet50": {"width": 0.125}, "mobilenet": {"width": 0.125}, "mobilenet_v2": {"width": 0.25},
            "densenet121": {"width": 0.125}, "xception": {"width": 0.125}, "vit": {"depth": 1}}


@pytest.fixture(scope="module")
def maps_store(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet, digits_split: MembershipSplit,
               audited_digits: tuple[AuditedModel, Path]) -> Path:
    out = tmp_path_factory.mktemp("maps") / "maps.h5"
    return extract(audited_digits[0], digits, split_rows(digits_split),
                   ExtractSettings(layer_setup="2,penultimate", source="activation-maps", reduction="flat",
                                   batch_size=200),
                   out=out, split=digits_split)


def test_blocks_of_the_small_cnn_and_a_resnet() -> None:
    small = build("small_cnn", 1, 10, 8, width=0.5).eval()
    assert model_blocks(small, torch.zeros(1, 1, 8, 8)) == [str(i) for i in range(11) if i != 7]  # 7: Flatten
    presets = module_presets(small, torch.zeros(1, 1, 8, 8))
    assert presets["penultimate"] == ["9"] and presets["output"] == ["10"] and presets["combined"] == ["0", "8", "10"]
    resnet = build("resnet18", 3, 10, 32, width=0.125).eval()
    blocks = model_blocks(resnet, torch.zeros(1, 3, 32, 32))
    # At 32 px the stem's max-pool is an Identity, which adds no depth.
    assert blocks[:4] == ["conv1", "bn1", "layer1.0", "layer1.1"] and blocks[-3:] == ["layer4.1", "avgpool", "fc"]
    assert resolve_modules(resnet, "layer3.?", torch.zeros(1, 3, 32, 32)) == ["layer3.0", "layer3.1"]
    assert resolve_modules(resnet, "layer3.0.*", torch.zeros(1, 3, 32, 32)) == [  # any module, in forward order
        "layer3.0.conv1", "layer3.0.bn1", "layer3.0.conv2", "layer3.0.bn2", "layer3.0.downsample",
        "layer3.0.downsample.0", "layer3.0.downsample.1"]
    assert resolve_modules(resnet, "layer2.1,penultimate", torch.zeros(1, 3, 32, 32)) == ["layer2.1", "avgpool"]
    with pytest.raises(UnknownNameError, match="module 'layer9' matches no module"):
        resolve_modules(resnet, "layer9", torch.zeros(1, 3, 32, 32))


def test_store_holds_the_forward_activations(maps_store: Path, digits: ImageSet,
                                             audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[0].module
    with FeatureStore.open(maps_store) as store:
        prov = store.provenance
        assert store.layers == ["2.output", "9.output"] and prov["parameters"] == ["2", "9"]
        assert prov["layer_shapes"] == {"2": [8, 8, 8], "9": [32]}
        assert store.dims == {"2.output": 512, "9.output": 32}
        ids = store.column("sample_id")[:16]
        got_maps, got_embedding = store.features(["2.output"])[:16], store.features(["9.output"])[:16]
        loss = store.column("loss")[:16]
    x = Transform()(digits.images[ids])
    with torch.no_grad():
        relu1 = model[:3](x)
        embedding = model[:10](x)
        logits = model(x)
    np.testing.assert_allclose(got_maps, relu1.flatten(1).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_maps[3].reshape(8, 8, 8), relu1[3].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_embedding, embedding.numpy(), rtol=1e-6, atol=1e-7)
    expected_loss = F.cross_entropy(logits.double(), torch.from_numpy(digits.labels[ids]), reduction="none")
    np.testing.assert_allclose(loss, expected_loss.numpy(), rtol=1e-5)


def test_pooled_maps_are_adaptive_averages(tmp_path: Path, digits: ImageSet, digits_split: MembershipSplit,
                                           audited_digits: tuple[AuditedModel, Path]) -> None:
    model = audited_digits[0].module
    path = extract(audited_digits[0], digits, split_rows(digits_split),
                   ExtractSettings(layer_setup="5,8", source="activation-maps", reduction="pool:3x2", batch_size=400),
                   out=tmp_path / "p.h5", split=digits_split)
    with FeatureStore.open(path) as store:
        assert store.provenance["layer_shapes"] == {"5": [16, 3, 2], "8": [32]}
        ids = store.column("sample_id")[:8]
        got = store.features(["5.output"])[:8]
    with torch.no_grad():
        act = model[:6](Transform()(digits.images[ids]))
    # 8 rows into 3: windows [0, 3), [2, 6), [5, 8); 8 columns into 2: [0, 4), [4, 8).
    by_hand = torch.stack([torch.stack([act[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for c0, c1 in ((0, 4), (4, 8))], -1)
                           for r0, r1 in ((0, 3), (2, 6), (5, 8))], -2)
    np.testing.assert_allclose(got, by_hand.flatten(1).numpy(), rtol=1e-5, atol=1e-6)


def test_pool_refuses_weight_modifiers_and_bad_sizes(tmp_path: Path, digits: ImageSet,
                                                     digits_split: MembershipSplit,
                                                     audited_digits: tuple[AuditedModel, Path]) -> None:
    with pytest.raises(InputError, match=r"pool:2x2 averages \(B, C, H, W\) activation maps; 0.weight"):
        extract(audited_digits[0], digits, split_rows(digits_split),
                ExtractSettings(layer_setup="entry", reduction="pool:2x2", engine="vmap"), out=tmp_path / "g.h5",
                split=digits_split)
    with pytest.raises(InputError, match="needs a spatial size such as 'pool:4x4'"):
        parse_reduction("pool:4by4")


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_map_cnn_reads_the_maps_of_every_zoo_family(arch: str) -> None:
    """Shapes from the first block, a middle one and the penultimate one of each family: the network folds each
    block into its map and gives one probability per row, with or without the one-hot class."""
    model = build(arch, 3, 10, 32, **FAMILIES[arch]).eval()
    x = torch.randn(2, 3, 32, 32)
    blocks = module_presets(model, x)["blocks"]
    chosen = list(dict.fromkeys([blocks[0], blocks[len(blocks) // 2], *module_presets(model, x)["penultimate"]]))
    shapes = map_shapes(model, chosen, parse_reduction("pool:4x4"), x)
    flat_shapes = map_shapes(model, chosen, parse_reduction("flat"), x)
    for name in chosen:
        assert math.prod(flat_shapes[name]) >= math.prod(shapes[name])
        if len(flat_shapes[name]) == 3:
            c, h, w = flat_shapes[name]
            assert shapes[name] == [c, min(h, 4), min(w, 4)]
    width = sum(math.prod(s) for s in shapes.values())
    rows = np.random.default_rng(0).normal(size=(5, width)).astype(np.float32)
    for label_aware in (False, True):
        mint = MapCnnMint(width, shapes=list(shapes.values()), channels=4, hidden=8, label_aware=label_aware,
                          classes=10 if label_aware else 0)
        encoder = mint.net[0]
        inputs = torch.from_numpy(mint._inputs(rows, np.arange(5)))
        assert encoder(inputs).shape == (5, 4 * 4 * len(chosen) + (10 if label_aware else 0))
        p = mint.predict_proba(rows, np.arange(5))
        assert p.shape == (5,) and np.all((p > 0) & (p < 1))


def test_map_cnn_and_label_aware_mlp_train_on_a_maps_store(tmp_path: Path, maps_store: Path) -> None:
    for kind, options in (("map_cnn", {"channels": 4, "hidden": 8, "max_epochs": 3}),
                          ("mlp", {"label_aware": True, "max_epochs": 3}),
                          ("map_cnn", {"channels": 4, "hidden": 8, "max_epochs": 3, "label_aware": True})):
        mint = train_mint(maps_store, kind=kind, setup="2.output", options=options)
        assert mint.model.config()["classes"] == (10 if options.get("label_aware") else 0)
        mint.save(tmp_path / "m.pt")
        loaded = TrainedMint.load(tmp_path / "m.pt")
        with FeatureStore.open(maps_store) as store:
            x, labels = store.features(mint.spec.layers)[:40], store.column("label")[:40]
        np.testing.assert_allclose(loaded.predict_proba(x, labels), mint.predict_proba(x, labels), rtol=1e-6)
        result = evaluate_store(loaded, maps_store, n_boot=0)
        assert result.protocol["source"] == "activation-maps" and result.rows.members == result.rows.external
    assert mint.model.config()["shapes"] == [[8, 8, 8]]


def test_label_aware_scores_depend_on_the_label_and_need_it(maps_store: Path) -> None:
    mint = train_mint(maps_store, kind="mlp", setup="9.output", options={"label_aware": True, "max_epochs": 5})
    with FeatureStore.open(maps_store) as store:
        x, labels = store.features(mint.spec.layers)[:50], store.column("label")[:50]
    assert not np.allclose(mint.predict_proba(x, labels), mint.predict_proba(x, (labels + 1) % 10))
    with pytest.raises(InputError, match="needs each row's class label"):
        mint.predict_proba(x)
    with pytest.raises(InputError, match="class 10 is outside the 10 classes"):
        mint.predict_proba(x, np.full(50, 10))
    with pytest.raises(InputError, match="needs the number of classes"):
        MINT_MODELS.get("mlp")(4, label_aware=True)


def test_class_specific_map_cnn_gets_each_block_shape(maps_store: Path) -> None:
    mint = train_mint(maps_store, kind="per_class", setup="all",
                      options={"base": "map_cnn", "base_options": {"channels": 4, "hidden": 8, "max_epochs": 2}})
    assert mint.model.config()["base_options"]["shapes"] == [[8, 8, 8], [32]]  # type: ignore[index]
    assert len(mint.model.config()["classes"]) + len(mint.model.config()["shared_classes"]) == 10  # type: ignore[arg-type]
    result = evaluate_store(mint, maps_store, n_boot=0)
    assert result.protocol["classifier"] == "per_class"


def test_map_cnn_refuses_features_without_map_shapes(digits_store: Path) -> None:
    with pytest.raises(InputError, match="the map CNN MINT classifier needs activation maps"):
        train_mint(digits_store, kind="map_cnn", setup="combined")
