"""Reference attacks on a model trained outside gmint: its own code and normalisation, class names of its own,
membership and control rows from the auditor's lists, and the training recipe given by the auditor.

The reference models must be the imported model's architecture (built from its factory with its own arguments),
fed through its preprocessing and read at its output, so that LiRA and RMIA compare like with like; every
refusal (no recipe, no data, no split, a recipe for a model that records its own) is one line before any file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gmint.data.base import DATASETS, ImageSet
from gmint.data.split import split_from_lists
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.models.description import ModelDescription, import_factory
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig, train_audited
from gmint.reference import ReferenceSet
from tests.cli_runner import Outcome, run, snapshot

SOURCE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Returns (logits, embedding): the description reads the logits at index 0."""

    def __init__(self, n_out: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, hidden)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        h = torch.relu(self.fc(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)))
        return self.head(h), h


def build(n_out: int = 10, hidden: int = 16) -> TinyNet:
    return TinyNet(n_out, hidden)
'''
ARGS = {"n_out": 10, "hidden": 16}  # the factory's own arguments, none of the zoo's
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MEAN, STD = 0.3, 0.2  # not gmint's default (0.5, 0.5): reference models must be fed as the model is
RECIPE = ("--epochs", 2, "--lr", 0.01, "--batch-size", 32)


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    return DATASETS.get("digits")()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet) -> Path:
    """The auditor's folder: the module file, weights trained in plain PyTorch on the members, the imported model,
    JSON lists of members, externals and control rows, and the split made from them."""
    folder = tmp_path_factory.mktemp("imported-references")
    (folder / "tinynet.py").write_text(SOURCE)
    order = np.random.default_rng(0).permutation(len(digits))
    lists = {"members": order[:120], "external": order[120:240], "control": order[240:400]}
    for name, rows in lists.items():
        (folder / f"{name}.json").write_text(json.dumps(sorted(int(r) for r in rows)))
    torch.manual_seed(0)
    factory, _ = import_factory(f"{folder / 'tinynet.py'}:build")
    model = factory(**ARGS)
    members = lists["members"]
    x = (torch.from_numpy(digits.images[members]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    y = torch.from_numpy(digits.labels[members])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        for start in range(0, len(members), 32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[start:start + 32])[0], y[start:start + 32]).backward()
            optimizer.step()
    torch.save(model.state_dict(), folder / "weights.pt")
    done = run("model", "import", folder / "weights.pt", "--arch", f"{folder / 'tinynet.py'}:build", "--arch-args",
               json.dumps(ARGS), "--image-size", 8, "--channels", 1, "--mean", MEAN, "--std", STD, "--classes",
               ",".join(NAMES), "--out", folder / "model.pt")
    assert done.code == 0, done.stderr
    done = run("split", "--data", "digits", "--members-list", folder / "members.json", "--external-list",
               folder / "external.json", "--control-list", folder / "control.json", "--out", folder / "split.json")
    assert done.code == 0, done.stderr
    assert "160 control" in done.stdout
    return folder


@pytest.fixture(scope="module")
def attacked(work: Path) -> dict[str, Outcome]:
    """reference train, extract and attack, as the auditor types them."""
    refs = work / "refs"
    steps = {"train": run("reference", "train", "--model", work / "model.pt", "--split", work / "split.json",
                          "--data", "digits", "--k", 2, *RECIPE, "--out", refs)}
    steps["extract"] = run("reference", "extract", refs)
    steps["attack"] = run("reference", "attack", refs, "--attacks", "loss,lira-offline,rmia", "--n-boot", 20, "--json")
    for name, outcome in steps.items():
        assert outcome.code == 0, f"{name}: {outcome.stderr}"
    return steps


def test_reference_attacks_run_on_an_imported_model(attacked: dict[str, Outcome]) -> None:
    assert "recipe given: epochs 2, batch_size 32, optimizer adam, lr 0.01" in attacked["train"].stdout
    results = json.loads(attacked["attack"].stdout)["results"]
    by = {(r["attack"], r["k"]): r for r in results}
    assert {("lira-offline", 2), ("rmia", 2), ("loss", 0)} <= set(by)
    assert 0.0 <= by[("rmia", 2)]["metrics"]["auc"]["value"] <= 1.0
    assert 0.0 <= by[("lira-offline", 2)]["metrics"]["auc"]["value"] <= 1.0


def test_reference_models_are_the_described_model_trained_with_the_given_recipe(work: Path,
                                                                                attacked: dict[str, Outcome]) -> None:
    audited = load_audited(work / "model.pt").description
    manifest = ReferenceSet.load(work / "refs")
    control = json.loads((work / "control.json").read_text())
    assert audited is not None and manifest.recipe is not None and manifest.recipe["epochs"] == 2
    assert manifest.split is not None and manifest.split["control"] == control and manifest.dataset == "digits"
    for i in range(manifest.k):
        reference = load_audited(work / "refs" / manifest.model_file(i))
        described = reference.description
        assert described == audited  # factory, its own arguments, preprocessing, output, input and class names
        assert described.arch_args == ARGS and described.output == "index:0" and described.classes == NAMES
        assert described.transform == Transform(size=8, mean=(MEAN,), std=(STD,), channels=1)
        assert described.arch_sha256 == audited.arch_sha256
        assert reference.meta["train_config"]["epochs"] == 2 and reference.meta["train_config"]["lr"] == 0.01
        assert set(reference.meta["rows"]) <= set(control)
        assert reference.module(torch.zeros(1, 1, 8, 8)).shape == (1, 10)  # reads the logits, not the tuple
    refs = work / "refs"
    before = snapshot(refs)
    again = run("reference", "train", "--model", work / "model.pt", "--split", work / "split.json", "--data", "digits",
                "--k", 2, "--epochs", 3, "--lr", 0.01, "--batch-size", 32, "--out", refs, "--resume")
    assert again.code == 1 and "recipe" in again.stderr and again.stderr.strip().count("\n") == 0, again.stderr
    assert snapshot(refs) == before


def refused(work: Path, *args: object) -> str:
    """The one line a refused `gmint reference train` prints, after checking it wrote nothing."""
    before = snapshot(work)
    done = run("reference", "train", *args, "--out", work / "refused")
    assert done.code == 1 and done.stdout == "" and done.stderr.strip().count("\n") == 0, done.stderr
    assert snapshot(work) == before and not (work / "refused").exists()
    return done.stderr


def test_an_imported_model_without_recipe_data_or_split_is_refused_in_one_line(work: Path) -> None:
    model, split = work / "model.pt", work / "split.json"
    assert "records no training recipe" in refused(work, "--model", model, "--split", split, "--data", "digits")
    assert "--data is required" in refused(work, "--model", model, "--split", split, *RECIPE)
    assert "--split is required" in refused(work, "--model", model, "--data", "digits", *RECIPE)
    assert "not both" in refused(work, "--model", model, "--split", split, "--data", "digits", "--epochs", 2,
                                 "--recipe", '{"lr": 0.01}')
    assert "unknown training recipe field(s) epoch" in refused(work, "--model", model, "--split", split, "--data",
                                                               "digits", "--recipe", '{"epoch": 2}')


def test_a_recipe_for_a_model_that_records_its_own_is_refused(work: Path, attacked: dict[str, Outcome]) -> None:
    trained_by_gmint = work / "refs" / "ref-00.pt"  # a reference model records the recipe it was trained with
    assert "records the recipe gmint trained it with" in refused(work, "--model", trained_by_gmint, "--epochs", 2)


def test_train_audited_takes_a_zoo_architecture_or_a_description(tmp_path: Path, digits: ImageSet,
                                                                 work: Path) -> None:
    split = split_from_lists(digits, list(range(40)), list(range(40, 80)), control=list(range(80, 120)))
    description = load_audited(work / "model.pt").description
    assert description is not None
    for zoo in ({"transform": Transform()}, {"arch_options": {"width": 0.5}}):  # a description has its own
        with pytest.raises(InputError, match="give one of them"):
            train_audited(digits, split, arch=description, config=TrainConfig(epochs=1), out=tmp_path / "m.pt",
                          **zoo)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="give one of them"):  # a zoo architecture is fed through its transform
        train_audited(digits, split, arch="small_cnn", config=TrainConfig(epochs=1), out=tmp_path / "m.pt")
    with pytest.raises(InputError, match="not the model's in its order"):  # digits are named 0-9, the model's not
        train_audited(digits, split, arch=description, config=TrainConfig(epochs=1), out=tmp_path / "m.pt")
    other = ModelDescription(**{**description.__dict__, "num_classes": 3, "classes": None})
    with pytest.raises(InputError, match="3 outputs"):
        train_audited(digits, split, arch=other, config=TrainConfig(epochs=1), out=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_a_control_list_is_kept_out_of_the_pool_and_holdout_and_may_not_overlap(digits: ImageSet) -> None:
    members, external, control = list(range(0, 60)), list(range(60, 120)), list(range(120, 180))
    plain = split_from_lists(digits, members, external)
    split = split_from_lists(digits, members, external, control=control)
    assert split.control == control and not set(control) & set(split.pool + split.holdout)
    assert (split.pool, split.holdout) == (plain.pool, plain.holdout)  # the draw does not depend on the control
    assert "control_sha256" in split.options and "control_sha256" not in plain.options
    with pytest.raises(InputError, match=r"^2 items on the control list and the external list: 60, 61; a control "
                                         "row is neither a member nor external$"):
        split_from_lists(digits, members, external, control=[60, 61, 150])


def test_the_cli_names_the_control_list_and_refuses_it_without_the_others(tmp_path: Path) -> None:
    for name, rows in (("members", range(0, 60)), ("external", range(60, 120)), ("control", [0, 130])):
        (tmp_path / f"{name}.json").write_text(json.dumps(list(rows)))
    done = run("split", "--members-list", tmp_path / "members.json", "--external-list", tmp_path / "external.json",
               "--control-list", tmp_path / "control.json", "--out", tmp_path / "split.json")
    assert done.code == 1 and f"--control-list {tmp_path / 'control.json'}" in done.stderr
    assert "the members list" not in done.stderr and "--members-list" in done.stderr
    done = run("split", "--control-list", tmp_path / "control.json", "--out", tmp_path / "split.json")
    assert done.code == 1 and "--control-list goes with --members-list and --external-list" in done.stderr
    assert not (tmp_path / "split.json").exists()
