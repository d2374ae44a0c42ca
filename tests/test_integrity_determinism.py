"""The same seed gives the same figures wherever it runs: whatever torch's thread count, and however often
the demo is run in one folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.models.train import TrainConfig, train_audited
from tests.cli_runner import invoke


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_training_does_not_depend_on_the_callers_thread_count(tmp_path: Path, digits: ImageSet,
                                                              digits_split: MembershipSplit,
                                                              restore_threads: None) -> None:
    """A batch's gradient is summed across threads, so 1 and 2 threads round differently and, 40 epochs
    later, train different models (the demo's AUC moved in the third decimal): training fixes its own."""
    config = TrainConfig(epochs=2, batch_size=32)
    models = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        models[threads] = train_audited(digits, digits_split, arch="small_cnn", transform=Transform(), config=config,
                                        out=tmp_path / f"{threads}.pt")
        assert torch.get_num_threads() == threads  # the caller's setting is given back
    assert models[1].fingerprint == models[2].fingerprint
    assert models[1].meta["history"] == models[2].meta["history"]


def test_the_demo_twice_in_one_folder_prints_the_same_figures_and_keeps_its_models_and_stores(
        tmp_path: Path, restore_threads: None) -> None:
    """The second run resumes the finished models and stores (their files stay byte-identical) and refits the
    MINT classifiers; it prints exactly what the first printed, here on another thread count."""
    outputs, files = [], []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        code, out = invoke("demo", "--out", tmp_path, "--epochs", 2, "--overwrite")  # into the non-empty folder
        assert code == 0, out
        outputs.append(out)
        files.append({p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())
                      if p.is_file() and not p.name.startswith("mint-")})
    assert outputs[0] == outputs[1]
    assert set(files[0]) == {"split.json", "audited.pt", "control.pt", "audited-gradient.h5", "audited-activation.h5",
                             "control-gradient.h5", "audit.toml", "report.json", "report.html"}
    assert files[0] == files[1]
