"""Auditing a model trained outside gmint, as its auditor would: a module file beside the working directory, a
forward returning a dict, its own normalisation, class-named image folders and lists of member and external files.

The CLI run (import → split → extract → train → eval → score → serve) must give exactly the figures of the same
audit declared through the library API, and a wrong normalisation must be caught before any Weight Modifier.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image

from gmint.assess.candidates import relabel
from gmint.assess.evaluate import evaluate_store
from gmint.data.base import DATASETS
from gmint.data.readers import load_dataset
from gmint.data.split import split_from_lists
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.features.extract import extract, split_rows
from gmint.features.store import FeatureStore
from gmint.mint.train import train_mint
from gmint.models.description import describe, import_factory
from gmint.models.io import AuditedModel, load_audited
from gmint.serve.app import create_app
from gmint.serve.audits import load_audit
from tests.cli_runner import run, snapshot

MODULE = "own_models_e2e"  # a name no other test imports: gmint imports it from the working directory
SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    """A digits CNN whose forward returns a dict, as Hugging Face-style models do."""

    def __init__(self, num_classes: int = 10, width: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width * 16, 32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)
        return {"logits": self.head(torch.relu(self.fc(h))), "embedding": h}


def build(num_classes: int = 10, width: int = 12) -> Net:
    return Net(num_classes, width)
'''
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MEAN, STD = 0.1307, 0.3081  # MNIST's Normalize, not gmint's default (0.5, 0.5)
N_SIDE, N_CANDIDATES = 240, 40


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The auditor's folder: the module file, the weights of a model trained in plain PyTorch on the members,
    the class-named image folders, the member/external lists and the candidates."""
    folder = tmp_path_factory.mktemp("own-model")
    (folder / f"{MODULE}.py").write_text(SOURCE)
    digits = DATASETS.get("digits")()
    order = np.random.default_rng(0).permutation(len(digits))
    members, external = order[:N_SIDE], order[N_SIDE:2 * N_SIDE]
    candidates = order[2 * N_SIDE:2 * N_SIDE + N_CANDIDATES]
    for rows, root in ((np.concatenate([members, external]), "images"), (candidates, "candidates")):
        for r in rows:
            _png(folder / root / NAMES[digits.labels[r]] / f"{r:04d}.png", digits.images[r, :, :, 0])
    (folder / "members.txt").write_text("# the files the model was trained on\n"
                                        + "".join(f"{NAMES[digits.labels[r]]}/{r:04d}.png\n" for r in members))
    with (folder / "external.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "file"])
        writer.writerows([NAMES[digits.labels[r]], f"{NAMES[digits.labels[r]]}/{r:04d}.png"] for r in external)
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n")
    torch.manual_seed(0)
    factory, _ = import_factory(f"{folder / MODULE}.py:build")
    model = factory(num_classes=10)
    x = (torch.from_numpy(digits.images[members]).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    y = torch.from_numpy(digits.labels[members])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        for start in range(0, N_SIDE, 32):
            optimizer.zero_grad()
            F.cross_entropy(model(x[start:start + 32])["logits"], y[start:start + 32]).backward()
            optimizer.step()
    torch.save(model.state_dict(), folder / "weights.pt")
    return folder


def _import(mean: float, std: float, out: str) -> list[str]:
    return ["model", "import", "weights.pt", "--arch", f"{MODULE}:build", "--arch-args", '{"num_classes": 10}',
            "--image-size", "8", "--channels", "1", "--mean", str(mean), "--std", str(std), "--classes-file",
            "classes.txt", "--train-accuracy", "1.0", "--out", out]


@pytest.fixture(scope="module")
def cli_audit(workdir: Path) -> dict[str, object]:
    """The whole audit as a user types it, from the auditor's folder; what each step printed."""
    mp = pytest.MonkeyPatch()
    mp.chdir(workdir)
    try:
        steps = {
            "import": run(*_import(MEAN, STD, "model.pt")),
            "show": run("model", "show", "model.pt", "--json"),
            "layers": run("layers", "--model", "model.pt", "--json"),
            "split": run("split", "--data", "imagefolder", "--data-root", "images", "--members-list", "members.txt",
                         "--external-list", "external.csv", "--out", "split.json"),
            "extract": run("extract", "--model", "model.pt", "--data", "imagefolder", "--data-root", "images",
                           "--split", "split.json", "--out", "features.h5"),
            "train": run("train", "features.h5", "--out", "mint.pt"),
            "eval": run("eval", "mint.pt", "features.h5", "--json", "--n-boot", "200"),
            "score": run("score", "--model", "model.pt", "--mint", "mint.pt", "--store", "features.h5",
                         "--images", "candidates", "--out", "scores.csv"),
        }
    finally:
        mp.undo()
    for name, outcome in steps.items():
        assert outcome.code == 0, f"{name}: {outcome.stderr}"
    return {name: outcome for name, outcome in steps.items()}


def test_the_cli_audit_of_a_model_from_outside_runs_end_to_end(workdir: Path, cli_audit: dict) -> None:
    shown = json.loads(cli_audit["show"].stdout)
    assert shown["output"] == "key:logits" and shown["classes"] == list(NAMES)
    assert shown["transform"] == {"size": 8, "mean": [MEAN], "std": [STD], "channels": 1}
    # the module found beside the working directory is recorded as its file, so the checkpoint loads anywhere
    assert shown["arch"] == f"{workdir / MODULE}.py:build" and shown["input"] == {"channels": 1, "size": 8}
    listed = json.loads(cli_audit["layers"].stdout)  # ordered by a forward pass on the recorded input shape
    assert listed["order"] == "forward" and [x["parameter"] for x in listed["layers"]] == ["conv.weight",
                                                                                         "fc.weight", "head.weight"]
    printed = cli_audit["extract"].stdout
    assert "audited model on its declared members: accuracy 1.000" in printed and "WARNING" not in printed
    with FeatureStore.open(workdir / "features.h5") as store:
        assert store.provenance["model_check"]["warnings"] == []  # type: ignore[index]
        assert store.provenance["transform"] == shown["transform"]
    result = json.loads(cli_audit["eval"].stdout)
    assert result["audited_model"]["members_accuracy"] == 1.0
    with (workdir / "scores.csv").open() as fh:
        scored = list(csv.DictReader(fh))
    assert len(scored) == N_CANDIDATES  # brand-new images of the same folder layout are scored, not refused


def test_the_cli_audit_equals_the_same_audit_declared_through_the_library(workdir: Path, cli_audit: dict,
                                                                          tmp_path: Path) -> None:
    factory, _ = import_factory(f"{workdir / MODULE}.py:build")
    module = factory(num_classes=10)
    module.load_state_dict(torch.load(workdir / "weights.pt", weights_only=True))
    transform = Transform(size=8, mean=(MEAN,), std=(STD,), channels=1)
    description, module = describe(module, arch="declared-in-python", arch_args={}, transform=transform,
                                   classes=NAMES)
    audited = AuditedModel(module, description.to_meta())
    folder = load_dataset("imagefolder", workdir / "images", cache=False)
    members = (workdir / "members.txt").read_text().splitlines()[1:]
    with (workdir / "external.csv").open() as fh:
        external = [row["file"] for row in csv.DictReader(fh)]
    split = split_from_lists(folder, members, external)  # drawn on the folder as it is, as `gmint split` does
    with pytest.raises(InputError, match=r"the data's classes \(eight, five, four, .*\) are not the audited "):
        extract(audited, folder, split_rows(split), out=tmp_path / "sorted.h5", split=split)  # labels sorted by name
    assert not (tmp_path / "sorted.h5").exists()
    data = relabel(folder, NAMES)
    extract(audited, data, split_rows(split), out=tmp_path / "lib.h5", split=split)
    with FeatureStore.open(tmp_path / "lib.h5") as lib, FeatureStore.open(workdir / "features.h5") as cli:
        assert lib.layers == cli.layers
        for column in ("sample_id", "label", "membership", "role", "loss"):
            np.testing.assert_array_equal(lib.column(column), cli.column(column))
        for layer in lib.layers:
            np.testing.assert_array_equal(lib.features([layer]), cli.features([layer]))
    mint = train_mint(tmp_path / "lib.h5", setup="all", fraction="D100", seed=0)  # the default, as the CLI
    ours = evaluate_store(mint, tmp_path / "lib.h5", n_boot=200, seed=0).to_dict()
    theirs = json.loads(cli_audit["eval"].stdout)
    for key in ("mint", "loss_threshold", "audited_model", "intervals", "rows"):
        assert ours[key] == theirs[key], key


def test_the_published_page_takes_the_imported_model_with_its_class_names(workdir: Path, cli_audit: dict) -> None:
    (workdir / "audit.json").write_text(json.dumps({"format": "gmint-audit/1", "model": "model.pt", "mint": "mint.pt",
                                                        "store": "features.h5"}))
    audit = load_audit(workdir, "own")
    assert audit.classes == NAMES
    listed = TestClient(create_app({"own": audit})).get("/api/audits/own")
    assert listed.status_code == 200 and listed.json()["classes"] == list(NAMES)
    gap = listed.json()["gap"]  # no training record: the gap the extraction measured on the declared sides
    assert gap["members_accuracy"] == 1.0 and 0.5 < gap["external_accuracy"] < 1.0


def test_a_wrong_normalisation_is_caught_before_any_weight_modifier(workdir: Path, cli_audit: dict,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    assert run(*_import(0.5, 0.5, "wrong.pt")).code == 0  # gmint's own default: the bug this check exists for
    done = run("extract", "--model", "wrong.pt", "--data", "imagefolder", "--data-root", "images",
               "--split", "split.json", "--out", "wrong.h5")
    assert done.code == 0, done.stderr
    assert "WARNING: the preprocessing looks wrong" in done.stdout
    assert "with MNIST's normalisation (mean 0.1307, std 0.3081) they are classified at 1.000" in done.stdout
    assert "the training accuracy stated for the model is 1.000" in done.stdout
    with h5py.File(workdir / "wrong.h5", "r") as fh:
        recorded = json.loads(fh.attrs["model_check"])
    assert any("preprocessing looks wrong" in w for w in recorded["warnings"])
    assert recorded["members"]["accuracy"] < 0.99
    assert run("train", "wrong.h5", "--out", "wrong-mint.pt").code == 0
    evaluated = run("eval", "wrong-mint.pt", "wrong.h5", "--json", "--n-boot", "50")
    said = json.loads(evaluated.stdout)["warnings"]  # every result from the store says it again
    assert any(w.startswith("audited model: the preprocessing looks wrong") for w in said)


def test_a_plain_state_dict_is_refused_rather_than_fed_guessed_inputs(workdir: Path, cli_audit: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    done = run("extract", "--model", "weights.pt", "--arch", f"{MODULE}:build", "--data", "imagefolder",
               "--data-root", "images", "--split", "split.json", "--out", "guessed.h5")
    assert done.code == 1 and done.stderr.count("\n") == 1
    assert "records no preprocessing" in done.stderr and "gmint model import" in done.stderr
    assert snapshot(workdir) == before


@pytest.mark.parametrize(("change", "message"), [
    (["--mean", None], "--mean must be given"),
    (["--arch-args", '{"classes": 3}'], "cannot be called with classes"),
    (["--arch", "no_such_module:build"], "cannot import no_such_module"),
    (["--arch", f"{MODULE}:nothing"], "has no 'nothing'"),
    (["--arch-args", '{"num_classes": 7}'], "does not match the architecture"),
    (["--output-key", "scores"], "without 'scores'"),
    (["--classes-file", None, "--classes", "a,b,c"], "3 class names for a model with 10 outputs"),
    (["--std", "0"], "std must be positive"),
    (["--image-size", "4", "--crop", "6"], "crop 6 is larger"),
    (["--mean", None, "--std", None, "--image-size", None, "--channels", None, "--transform", "none.json"],
     "neither a JSON object"),
    (["--transform", '{"size": 8, "mean": 0.5, "std": 0.5}'], "--transform gives the whole preprocessing"),
    (["--channels", "3"], "the model fails on a 3x8x8 image as described"),
])
def test_a_description_that_does_not_fit_is_refused_in_one_line(workdir: Path, cli_audit: dict,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 change: list[str | None], message: str) -> None:
    monkeypatch.chdir(workdir)
    args = _import(MEAN, STD, "refused.pt")
    for option, value in zip(change[::2], change[1::2], strict=True):
        assert isinstance(option, str)
        if option in args:
            at = args.index(option)
            del args[at:at + 2]
        if value is not None:
            args += [option, value]
    before = snapshot(workdir)
    done = run(*args)
    assert done.code == 1 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert snapshot(workdir) == before


def test_a_changed_module_file_is_refused_and_a_file_path_arch_loads_from_anywhere(
        workdir: Path, cli_audit: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "code" / "net.py"
    copy.parent.mkdir()
    copy.write_text(SOURCE)
    monkeypatch.chdir(workdir)
    assert run("model", "import", "weights.pt", "--arch", f"{copy}:build", "--image-size", "8", "--mean", str(MEAN),
               "--std", str(STD), "--out", tmp_path / "m.pt").code == 0
    monkeypatch.chdir(tmp_path)  # another working directory: the absolute file path still builds it
    assert load_audited(tmp_path / "m.pt").fingerprint == load_audited(workdir / "model.pt").fingerprint
    copy.write_text(SOURCE.replace("torch.relu(self.fc(h))", "torch.tanh(self.fc(h))"))
    done = run("layers", "--model", tmp_path / "m.pt")
    assert done.code == 1 and "changed since the model was described" in done.stderr


class _Logits(torch.nn.Module):
    """A TorchScript-able wrapper returning the logits of the dict-returning Net, as a user would script it."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["logits"]


def test_torchscript_and_trusted_pickles_import_as_the_state_dict_does(workdir: Path, cli_audit: dict,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    reference = load_audited(workdir / "model.pt")  # reads the logits out of the dict already
    net = import_factory(f"{workdir / MODULE}.py:build")[0](num_classes=10)
    net.load_state_dict(torch.load(workdir / "weights.pt", weights_only=True))
    torch.jit.trace(_Logits(net).eval(), torch.zeros(1, 1, 8, 8)).save(tmp_path / "script.pt")
    torch.save(net, tmp_path / "pickled.pt")
    common = ["--image-size", "8", "--channels", "1", "--mean", str(MEAN), "--std", str(STD)]
    kept = run("model", "import", tmp_path / "script.pt", "--torchscript", *common, "--out", tmp_path / "ts.pt")
    assert kept.code == 0, kept.stderr  # no --arch: the archive is kept, the description inside it
    scripted = load_audited(tmp_path / "ts.pt", torchscript=True)
    assert scripted.description is not None and scripted.description.transform == reference.transform
    x = reference.transform(load_dataset("imagefolder", workdir / "images").images[:5])
    torch.testing.assert_close(scripted.module(x), reference.module(x))
    assert run("model", "import", tmp_path / "pickled.pt", "--trust-pickle", *common,
               "--out", tmp_path / "p.pt").code == 1  # a pickle goes into its code, never kept as a pickle
    done = run("model", "import", tmp_path / "pickled.pt", "--trust-pickle", "--arch", f"{MODULE}:build", *common,
               "--out", tmp_path / "p.pt")
    assert done.code == 0, done.stderr
    assert load_audited(tmp_path / "p.pt").fingerprint == reference.fingerprint


def resnet18(*, weights: None = None, num_classes: int = 1000) -> torch.nn.Module:
    """A stand-in with torchvision's factory signature (PyPI's torchvision does not import beside the CPU torch
    wheel here): keyword arguments, 1,000 classes unless told otherwise."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, num_classes))


def test_a_library_factory_takes_its_arguments_from_the_description(tmp_path: Path) -> None:
    torch.save(resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    common = ["model", "import", tmp_path / "r18.pt", "--arch", "tests.test_own_model:resnet18", "--image-size",
              "16", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    refused = run(*common, "--out", tmp_path / "m.pt")
    assert refused.code == 1 and "does not match the architecture" in refused.stderr  # 1,000 classes by default
    done = run(*common, "--arch-args", '{"num_classes": 10}', "--out", tmp_path / "m.pt", "--json")
    assert done.code == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["num_classes"] == 10 and shown["input"] == {"channels": 3, "size": 16}
    assert shown["arch"] == "tests.test_own_model:resnet18" and shown["arch_sha256"] is not None


AUDIT = """
out = "audit"
n_boot = 200

[data]
dataset = "imagefolder"
root = "images"

[split]
members_list = "members.txt"
external_list = "external.csv"

[model]
file = "model.pt"

[features]
setups = ["combined"]
activation = false

[candidates]
images = "candidates"
"""


def test_one_configuration_audits_the_model_from_outside_as_the_verbs_do(workdir: Path, cli_audit: dict) -> None:
    """`gmint audit` on the auditor's own lists and model file: the split, the rows, the loss threshold and the
    model's gap are those of the verb-by-verb run, and the candidates are scored against its held-out externals."""
    (workdir / "audit.toml").write_text(AUDIT, encoding="utf-8")
    outcome = run("audit", workdir / "audit.toml")
    assert outcome.code == 0, outcome.stderr
    report = json.loads((workdir / "audit" / "report.json").read_text(encoding="utf-8"))
    by_verbs = json.loads(cli_audit["eval"].stdout)
    assert report["provenance"]["split_sha256"] == json.loads((workdir / "split.json").read_text())["sha256"]
    assert report["audited_model"] == by_verbs["audited_model"]
    assert report["signals"]["loss threshold (baseline)"] == by_verbs["loss_threshold"]
    assert list(report["signals"]) == ["gMINT combined", "gMINT combined (the paper's MLP)",
                                       "loss threshold (baseline)"]  # no control model given
    assert report["candidates"]["n_candidates"] == N_CANDIDATES
    with FeatureStore.open(workdir / "audit" / "audited-gradient.h5") as store, \
            FeatureStore.open(workdir / "features.h5") as verbs:
        np.testing.assert_array_equal(store.features(), verbs.features())
        np.testing.assert_array_equal(store.column("membership"), verbs.column("membership"))
