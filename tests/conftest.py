"""Shared fixtures: a small audited model on digits and its feature store, built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gmint.data.base import DATASETS, ImageSet
from gmint.data.readers import load_dataset
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig, train_audited

torch.set_num_threads(1)  # small models: one thread is faster and deterministic

_env_root = os.environ.get("GMINT_DATA")
REAL_ROOT = Path(_env_root) if _env_root else Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FOLDERS = {"mnist": "MNIST", "cifar10": "cifar-10-images", "gtsrb": "GTSRB",
                "tiny_imagenet": "tiny-imagenet-200"}


@pytest.fixture(scope="session")
def real() -> Callable[[str], ImageSet]:
    """Each real dataset decoded once per session (no cache: the point is to exercise the readers);
    tests using it skip when the data is absent."""
    loaded: dict[str, ImageSet] = {}

    def get(name: str) -> ImageSet:
        if not (REAL_ROOT / REAL_FOLDERS[name]).is_dir():
            pytest.skip(f"{REAL_ROOT / REAL_FOLDERS[name]} is absent")
        if name not in loaded:
            loaded[name] = load_dataset(name, REAL_ROOT, cache=False)
        return loaded[name]

    return get


@pytest.fixture(scope="session")
def digits() -> ImageSet:
    return DATASETS.get("digits")()


@pytest.fixture(scope="session")
def digits_split(digits: ImageSet) -> MembershipSplit:
    return make_split(digits, members=0.5, external=0.5, holdout=0.5, seed=0)


@pytest.fixture(scope="session")
def digits_control_split(digits: ImageSet) -> MembershipSplit:
    """Digits with a control share: the rows reference models train on, never the audited model."""
    return make_split(digits, members=0.3, external=0.3, control=0.4, seed=0)


@pytest.fixture(scope="session")
def audited_digits(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet,
                   digits_split: MembershipSplit) -> tuple[AuditedModel, Path]:
    path = tmp_path_factory.mktemp("audited") / "audited.pt"
    model = train_audited(digits, digits_split, arch="small_cnn", transform=Transform(),
                          config=TrainConfig(epochs=8, batch_size=32), out=path, arch_options={"width": 0.5})
    return model, path


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet, digits_split: MembershipSplit,
                 audited_digits: tuple[AuditedModel, Path]) -> Path:
    out = tmp_path_factory.mktemp("store") / "features.h5"
    return extract(audited_digits[0], digits, split_rows(digits_split),
                   ExtractSettings(layer_setup="combined", reduction="mean", batch_size=200), out=out,
                   split=digits_split)


@pytest.fixture(scope="session")
def publish_audit(digits_store: Path, audited_digits: tuple[AuditedModel, Path]) -> Callable[..., Path]:
    """Writes a published audit, `<parent>/digits/`, of the session's model and store with a logistic MINT
    classifier; keyword arguments go into its audit.json (title, description, alpha). Returns the folder."""
    from gmint.mint import train_mint
    from gmint.serve.audits import AuditManifest, write_manifest

    def publish(parent: Path, **manifest: object) -> Path:
        folder = parent / "digits"
        folder.mkdir()
        shutil.copy(audited_digits[1], folder / "audited.pt")
        shutil.copy(digits_store, folder / "features.h5")
        train_mint(digits_store, kind="logreg", setup="combined", seed=0).save(folder / "mint.pt")
        write_manifest(folder, AuditManifest(model="audited.pt", mint="mint.pt", store="features.h5",
                                             **{"title": "Digits", **manifest}))  # type: ignore[arg-type]
        return folder

    return publish
