"""Every zoo architecture, at its CPU-scale configuration, trains one epoch on each real dataset and is
audited end to end (Weight Modifiers of its combined layers into a store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gmint.data.base import ImageSet
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.architectures import CPU_SCALE
from gmint.models.train import TrainConfig, train_audited

ARCHS = ["small_cnn", *sorted(CPU_SCALE)]


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "gtsrb", "tiny_imagenet"])
@pytest.mark.parametrize("arch", ARCHS)
def test_one_epoch_and_extraction_on_real_data(tmp_path: Path, real: Callable[[str], ImageSet], arch: str,
                                               dataset: str) -> None:
    data = real(dataset)
    rng = np.random.default_rng(0)
    train_rows = rng.permutation(np.flatnonzero(data.part == "train"))[:256]
    subset = data.take(np.sort(train_rows))  # 128 members, 128 external: one epoch is 2 batches
    # frames drawn at random: tracks are split across them, so rows are drawn one by one (`paper`)
    split = make_split(subset, members=0.5, external=0.5, protocol="paper", seed=0)
    model = train_audited(subset, split, arch=arch, transform=Transform(), config=TrainConfig(epochs=1),
                          out=tmp_path / "m.pt", arch_options=CPU_SCALE.get(arch, {}))
    assert model.meta["epochs_done"] == 1
    assert all(np.isfinite(v) for v in model.meta["record"].values())
    store = extract(model, subset, split_rows(split), ExtractSettings(layer_setup="combined", batch_size=64),
                    out=tmp_path / "f.h5", split=split)
    with FeatureStore.open(store) as fs:
        fs.require_complete()
        assert len(fs.layers) == 3 and np.isfinite(fs.features()).all()
