"""The label each candidate is scored under: class folders named by class name or index, and the audited
model's own prediction for images without a class, said in every output."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmint.assess.candidates import FOLDER, UNLABELLED, label_candidates, load_image_folder, relabel, unlabelled
from gmint.assess.scoring import audit_set, score_samples, write_scores
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.features.store import FeatureStore
from gmint.mint import TrainedMint, train_mint
from gmint.models.io import AuditedModel
from tests.cli_runner import invoke


def _folders(*names: str) -> ImageSet:
    """A tiny set read from class folders `names` (one image each)."""
    n = len(names)
    return ImageSet(name=FOLDER, images=np.zeros((n, 2, 2, 1), np.uint8), labels=np.arange(n),
                    sample_ids=np.arange(n), part=np.full(n, "train"), classes=tuple(names))


# -- class folders named by class name or index ----------------------------------------------------------


def test_class_folders_may_be_named_by_class_name_or_index() -> None:
    animals = ("cat", "dog", "bird")
    assert relabel(_folders("bird", "cat", "1"), animals).labels.tolist() == [2, 0, 1]
    assert relabel(_folders("0", "dog"), animals).classes == animals
    digits = tuple(str(i) for i in range(10))  # every name is its own index: no ambiguity
    assert relabel(_folders("3", "7"), digits).labels.tolist() == [3, 7]
    assert relabel(_folders("2", "5"), None).labels.tolist() == [2, 5]  # no names recorded: indices only


@pytest.mark.parametrize("names, classes, message", [
    (("3",), ("cat", "dog", "bird", "bee", "3"),
     "class folder '3' is ambiguous: it is the name of class 4 and the index of class 3 ('bee'); rename it so that "
     "it names only the class it holds"),
    (("cow",), ("cat", "dog"), "class folder 'cow' is not a class of the audited model (its classes: cat, dog; "
                               "or their indices 0 to 1)"),
    (("2",), ("cat", "dog"), "class folder '2' is not a class of the audited model"),
    (("-1",), ("cat", "dog"), "class folder '-1' is not a class of the audited model"),
    (("cat",), None, "class folder 'cat' is not a class of the audited model (its classes: 0, 1, …)"),
])
def test_folders_naming_no_class_or_two_classes_are_refused_in_one_line(
        names: tuple[str, ...], classes: tuple[str, ...] | None, message: str) -> None:
    with pytest.raises(InputError) as err:
        relabel(_folders(*names), classes)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


# -- images without a class: the model's prediction ------------------------------------------------------


@pytest.fixture(scope="module")
def mint(digits_store: Path) -> TrainedMint:
    return train_mint(digits_store, kind="logreg", setup="combined", seed=0)


def _save(folder: Path, digits: ImageSet, rows: np.ndarray, *, classed: bool = False) -> Path:
    for i in rows:
        where = folder / str(digits.labels[i]) if classed else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(where / f"{i}.png")
    return folder


def _predictions(audited: AuditedModel, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = audited.module.eval()(Transform.from_dict(audited.meta["transform"])(images))  # type: ignore[arg-type]
    return logits.argmax(1).numpy()


def test_a_flat_folder_needs_predicted_labels_and_is_said_so(tmp_path: Path, digits: ImageSet,
                                                             audited_digits: tuple[AuditedModel, Path]) -> None:
    audited = audited_digits[0]
    flat = _save(tmp_path / "flat", digits, np.arange(6))
    predicted = re.escape(Remedy.PREDICTED_LABELS.value)
    with pytest.raises(InputError, match=f"has no class folders: .*; {predicted}$") as err:
        load_image_folder(flat, audited)
    assert "--" not in str(err.value)  # the library names no CLI option
    data = load_image_folder(flat, audited, labels="predicted")
    assert data.name == FOLDER and data.classes == (UNLABELLED,) and unlabelled(data).all()
    assert data.root == flat.resolve()
    with pytest.raises(InputError, match=f"^6 candidates have no class \\(e.g. 0.png\\); give each its class; "
                                         f"{re.escape(Remedy.PREDICTED_LABELS.value)}$"):
        label_candidates(audited, data, np.arange(6), Transform())
    # Images in class folders beside loose ones: the loose ones are never skipped silently.
    _save(tmp_path / "flat", digits, np.arange(6, 9), classed=True)
    with pytest.raises(InputError, match="^6 images at the top of .* are in no class folder \\(e.g. 0.png\\)"):
        load_image_folder(flat, audited)
    mixed = load_image_folder(flat, audited, labels="predicted")
    missing = unlabelled(mixed)
    assert missing.sum() == 6 and mixed.labels[~missing].tolist() == digits.labels[6:9].tolist()
    chosen = label_candidates(audited, mixed, np.arange(9), Transform.from_dict(audited.meta["transform"]),
                              labels="predicted")
    assert chosen.predicted.tolist() == missing.tolist() and chosen.n_predicted == 6
    files = [int(Path(str(f)).stem) for f in mixed.files]
    expected = np.where(missing, _predictions(audited, digits.images[files]), digits.labels[files])
    assert chosen.label.tolist() == expected.tolist()


def test_predicted_labels_score_as_class_folders_of_the_predicted_class(
        tmp_path: Path, mint: TrainedMint, digits: ImageSet, audited_digits: tuple[AuditedModel, Path],
        digits_split: MembershipSplit) -> None:
    """Scoring a flat folder under predicted labels is scoring the same images put in the folders of the
    classes the model predicts: the label is the only difference predicted labels make."""
    audited = audited_digits[0]
    rows = np.intersect1d(digits_split.holdout, digits_split.external)[:12]
    predicted = _predictions(audited, digits.images[rows])
    flat = load_image_folder(_save(tmp_path / "flat", digits, rows), audited, labels="predicted")
    scores = score_samples(audited, mint, flat, labels="predicted")
    for i, c in zip(rows, predicted, strict=True):
        (tmp_path / "as-predicted" / str(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(tmp_path / "as-predicted" / str(c) / f"{i}.png")
    folders = score_samples(audited, mint, load_image_folder(tmp_path / "as-predicted", audited))
    by_file = {Path(str(f)).name: s for f, s in zip(folders.file, folders.score, strict=True)}
    np.testing.assert_allclose(scores.score, [by_file[Path(str(f)).name] for f in scores.file], atol=1e-6)
    labels = {Path(str(f)).name: int(y) for f, y in zip(scores.file, scores.label, strict=True)}
    assert labels == {f"{i}.png": int(c) for i, c in zip(rows, predicted, strict=True)}
    assert scores.label_source == "predicted" and scores.n_predicted == 12
    assert {r["label_source"] for r in scores.records()} == {"predicted"}


def test_the_calibration_of_predicted_labels_keeps_the_rows_the_model_gets_right(
        tmp_path: Path, mint: TrainedMint, digits: ImageSet, digits_store: Path,
        audited_digits: tuple[AuditedModel, Path], digits_split: MembershipSplit) -> None:
    audited = audited_digits[0]
    rows = np.intersect1d(digits_split.holdout, digits_split.members)[:10]
    folder = _save(tmp_path / "mixed", digits, rows[:4])
    _save(folder, digits, rows[4:], classed=True)
    data = load_image_folder(folder, audited, labels="predicted")
    result = audit_set(audited, mint, data, calibration=digits_store, labels="predicted")
    with FeatureStore.open(digits_store) as store:
        held = (store.column("membership") == 0) & (store.column("role") == 1)
        wrong = int((store.column("pred")[held] != store.column("label")[held]).sum())
    assert wrong > 0 and result.calibration.misclassified == wrong
    assert result.verdict.n_calibration == int(held.sum()) - wrong
    note = (f"Labels: 4 of the 10 candidates were scored under the audited model's own predicted class, not a true "
            f"class; the calibration keeps only the held-out external samples the model classifies correctly ({wrong} "
            "misclassified left out), so the false-positive rate is not guaranteed to be α.")
    assert result.conclusion(0.05) == f"{result.verdict.conclusion(0.05)} {note}"
    assert result.verdict_dict(0.05)["conclusion"].endswith(note)
    sources = {Path(str(r["file"])).name: r["label_source"] for r in result.scores.records()}
    assert sources == {**{f"{i}.png": "predicted" for i in rows[:4]}, **{f"{i}.png": "true" for i in rows[4:]}}
    # The scores file records the label used and where it came from, row by row.
    with write_scores(result, tmp_path / "s.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert {r["label_source"] for r in table} == {"true", "predicted"}
    assert all(r["label"] == r["class"] for r in table)  # digits: class i is named "i"
    payload = json.loads(write_scores(result, tmp_path / "s.json").read_text())
    assert payload["label_source"] == "predicted" and payload["verdict"]["predicted_labels"] == 4
    assert payload["verdict"]["conclusion"].endswith(note)
    # With true classes only, nothing is predicted and the calibration is whole.
    true = audit_set(audited, mint, load_image_folder(_save(tmp_path / "classed", digits, rows, classed=True),
                                                      audited), calibration=digits_store, labels="predicted")
    assert true.scores.n_predicted == 0 and true.calibration.misclassified == 0 and true.labels_note() == ""


def test_gmint_score_labels_predicted(tmp_path: Path, mint: TrainedMint, digits: ImageSet, digits_store: Path,
                                     audited_digits: tuple[AuditedModel, Path],
                                     digits_split: MembershipSplit) -> None:
    mint.save(tmp_path / "mint.pt")
    flat = _save(tmp_path / "flat", digits, np.intersect1d(digits_split.holdout, digits_split.members)[:8])
    base = ["score", "--model", audited_digits[1], "--mint", tmp_path / "mint.pt", "--store", digits_store,
            "--images", flat]
    code, text = invoke(*base, "--out", tmp_path / "a.csv")
    assert code == 1 and text.strip().count("\n") == 0
    assert text.strip().endswith("or label them with the audited model's predictions (--labels predicted)")
    code, text = invoke(*base, "--labels", "guessed", "--out", tmp_path / "a.csv")
    assert code == 1 and "--labels must be predicted or true, got 'guessed'" in text
    code, text = invoke(*base, "--labels", "predicted", "--out", tmp_path / "a.csv")
    assert code == 0, text
    assert "labels: 8 of 8 candidates scored under the audited model's own prediction (no class given), 0 under " \
           "their true class" in text
    assert "misclassified by the model left out" in text and "Labels: 8 of the 8 candidates" in text
    with (tmp_path / "a.csv").open() as fh:
        assert {r["label_source"] for r in csv.DictReader(fh)} == {"predicted"}
    code, text = invoke(*base, "--labels", "predicted", "--json", "--out", tmp_path / "a.json")
    assert code == 0, text
    result = json.loads(text)
    assert result["label_source"] == "predicted" and result["predicted_labels"] == 8
    assert result["verdict"]["label_source"] == "predicted" and "Labels: 8 of the 8" in result["verdict"]["conclusion"]
