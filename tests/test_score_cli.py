"""`gmint score` as a data owner runs it: an image folder or dataset rows in, scores and a verdict out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmint.data.base import ImageSet
from gmint.data.readers import load_dataset
from gmint.data.split import MembershipSplit
from gmint.features.extract import Rows, extract
from gmint.features.settings import ExtractSettings
from gmint.mint import train_mint
from gmint.models.io import AuditedModel, load_audited, save_checkpoint
from tests.cli_runner import invoke


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits_store: Path,
          audited_digits: tuple[AuditedModel, Path]) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("score")
    train_mint(digits_store, kind="logreg", setup="combined", seed=0).save(work / "mint.pt")
    return {"model": audited_digits[1], "mint": work / "mint.pt", "store": digits_store, "work": work}


def _base(s: dict[str, Path]) -> list[str | Path]:
    return ["score", "--model", s["model"], "--mint", s["mint"], "--store", s["store"]]


def _folder(root: Path, digits: ImageSet, rows: np.ndarray) -> Path:
    for i in rows:
        (root / str(digits.labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(root / str(digits.labels[i]) / f"digit{i}.png")
    return root


def test_scores_an_image_folder(setup: dict[str, Path], digits: ImageSet, digits_split: MembershipSplit) -> None:
    rows = np.intersect1d(digits_split.holdout, digits_split.members)[:40]
    folder = _folder(setup["work"] / "images", digits, rows)
    out = setup["work"] / "folder.csv"
    code, text = invoke(*_base(setup), "--images", folder, "--out", out)
    assert code == 0, text
    n_cal = len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert "candidates: 40 from" in text and f"calibration: {n_cal} held-out external rows" in text
    assert "verdict: Mann-Whitney U, one-sided" in text and "U = " in text and "p = " in text
    assert "evidence that these samples were used in training" in text.lower()
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 40 and list(table[0]) == ["sample_id", "file", "label", "class", "label_source", "score"]
    assert {r["label_source"] for r in table} == {"true"} and "labels:" not in text  # true classes: no label note
    assert all(r["class"] == Path(r["file"]).parent.name == r["label"] for r in table)
    assert {Path(r["file"]).name for r in table} == {f"digit{i}.png" for i in rows}
    # The same pixels read from the dataset score the same: the folder is relabelled and resized, not altered.
    ids = setup["work"] / "folder-rows.json"
    ids.write_text(json.dumps(rows.tolist()))
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", ids, "--out", setup["work"] / "rows.json")
    assert code == 0, text
    by_id = {r["sample_id"]: r["score"] for r in json.loads((setup["work"] / "rows.json").read_text())["scores"]}
    by_file = {int(Path(r["file"]).stem.removeprefix("digit")): float(r["score"]) for r in table}
    np.testing.assert_allclose([by_file[int(i)] for i in rows], [by_id[int(i)] for i in rows], atol=1e-5)


def test_scores_dataset_rows_with_a_json_verdict(setup: dict[str, Path], digits_split: MembershipSplit) -> None:
    out = setup["work"] / "members.json"
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", "holdout-members", "--sample", "50",
                        "--json", "--alpha", "0.01", "--out", out)
    assert code == 0, text
    verdict = json.loads(text)["verdict"]
    n_cal = len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert verdict["n_candidates"] == 50 and verdict["n_calibration"] == n_cal and verdict["alpha"] == 0.01
    assert verdict["rejects_h0"] == (verdict["p_value"] <= 0.01) and "Mann-Whitney U" in verdict["test"]
    written = json.loads(out.read_text())
    assert len(written["scores"]) == 50 and written["verdict"]["p_value"] == verdict["p_value"]


def test_external_candidates_are_left_out_of_the_calibration(setup: dict[str, Path],
                                                              digits_split: MembershipSplit) -> None:
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", "holdout-external",
                        "--out", setup["work"] / "x.csv")
    assert code == 1 and "leaving nothing to calibrate on; audit a subset of them (--sample N)" in text
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", "holdout-external", "--sample", "60",
                        "--json", "--out", setup["work"] / "ext.csv")
    assert code == 0, text
    result = json.loads(text)
    n_cal = len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert result["calibration_excluded"] == 60 and result["verdict"]["n_calibration"] == n_cal - 60
    ids = setup["work"] / "ids.json"
    ids.write_text(json.dumps(np.intersect1d(digits_split.holdout, digits_split.external)[:30].tolist()))
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", ids, "--json", "--out", setup["work"] / "f.csv")
    assert code == 0, text
    assert json.loads(text)["verdict"]["n_candidates"] == 30 and json.loads(text)["calibration_excluded"] == 30


def test_a_row_file_error_names_the_option(setup: dict[str, Path]) -> None:
    empty = setup["work"] / "empty.json"
    empty.write_text("[]")
    code, text = invoke(*_base(setup), "--data", "digits", "--rows", empty, "--out", setup["work"] / "e.csv")
    assert code == 1 and text.strip() == f"error: --rows: {empty} lists no rows"


@pytest.fixture(scope="module")
def other_store(setup: dict[str, Path], digits: ImageSet, digits_split: MembershipSplit) -> Path:
    """A store of held-out externals extracted from another model (one weight changed)."""
    audited = load_audited(setup["model"])
    with torch.no_grad():
        next(audited.module.parameters()).add_(0.01)
    save_checkpoint(setup["work"] / "other.pt", audited.module, audited.meta)
    rows = np.intersect1d(digits_split.holdout, digits_split.external)[:20]
    zeros, ones = np.zeros(len(rows), np.int8), np.ones(len(rows), np.int8)
    return extract(load_audited(setup["work"] / "other.pt"), digits, Rows(rows, zeros, ones),
                   out=setup["work"] / "other.h5", split=digits_split)


@pytest.mark.parametrize("args, message", [
    (["--images", "{work}/no-such-folder"], "not found"),
    (["--images", "{work}/images", "--data", "digits"], "either --images"),
    (["--data", "digits"], "needs --rows"),
    (["--data", "digits", "--rows", "{work}/nothing.json"], "not found"),
    (["--data", "digits", "--rows", "holdout-members", "--sample", "5000"], "between 1 and"),
    (["--data", "digits", "--rows", "holdout-members", "--store", "{other}"], "model_fingerprint"),
    (["--data", "digits", "--rows", "holdout-members", "--mint", "{work}/nothing.pt"], "not found"),
])
def test_bad_inputs_give_one_line_and_exit_1(setup: dict[str, Path], other_store: Path, args: list[str],
                                             message: str) -> None:
    filled = [a.format(work=setup["work"], other=other_store) for a in args]
    code, text = invoke(*_base(setup), *filled, "--out", setup["work"] / "bad.csv")
    assert code == 1, text
    assert message in text and text.strip().count("\n") == 0 and "Traceback" not in text
    assert not (setup["work"] / "bad.csv").exists()


def test_colour_folder_for_a_grey_model_is_refused(setup: dict[str, Path], digits: ImageSet) -> None:
    folder = setup["work"] / "colour" / "3"
    folder.mkdir(parents=True)
    pixels = digits.images[3, :, :, 0]
    Image.fromarray(np.stack([pixels, pixels // 2, pixels // 4], -1)).save(folder / "a.png")
    code, text = invoke(*_base(setup), "--images", folder.parent, "--out", setup["work"] / "c.csv")
    assert code == 1 and text.strip().count("\n") == 0
    assert text.strip().endswith("takes greyscale; convert them explicitly with --to-grey (luma) if that is what it "
                                 "was trained on")
    code, text = invoke(*_base(setup), "--images", folder.parent, "--to-grey", "--out", setup["work"] / "c.csv")
    assert code == 0, text


# -- candidates of an imagefolder audit: the same item by file, never by position ------------------------


@pytest.fixture(scope="module")
def folder_audit(setup: dict[str, Path], digits: ImageSet, digits_split: MembershipSplit,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An audit of the digits written as an imagefolder dataset (`<label>/<digits row>.png`), so its row ids
    (class, then file order) are not the digits' ids; the MINT classifier is fitted on its pool rows."""
    work = tmp_path_factory.mktemp("folder-audit")
    root = work / "dataset"
    for i in range(len(digits)):
        (root / str(digits.labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i, :, :, 0]).save(root / str(digits.labels[i]) / f"{i}.png")
    data = load_dataset("imagefolder", root, cache=False)
    row_of = np.array([int(Path(str(f)).stem) for f in data.files])  # imagefolder row → digits row
    index = np.flatnonzero(np.isin(row_of, digits_split.pool + digits_split.holdout))
    rows = Rows(index, digits_split.membership_of(row_of[index]), digits_split.role_of(row_of[index]))
    extract(load_audited(setup["model"]), data, rows, ExtractSettings(batch_size=300), out=work / "features.h5")
    train_mint(work / "features.h5", kind="logreg", setup="combined", seed=0).save(work / "mint.pt")
    return {"root": root, "store": work / "features.h5", "mint": work / "mint.pt", "work": work}


def _folder_base(s: dict[str, Path], f: dict[str, Path]) -> list[str | Path]:
    return ["score", "--model", s["model"], "--mint", f["mint"], "--store", f["store"]]


def _link(folder: Path, target: Path) -> None:
    (folder / target.parent.name).mkdir(parents=True, exist_ok=True)
    (folder / target.parent.name / f"copy-{target.name}").symlink_to(target)


def test_new_images_of_an_imagefolder_audit_are_scored_whatever_their_position(
        setup: dict[str, Path], folder_audit: dict[str, Path], digits: ImageSet,
        digits_split: MembershipSplit) -> None:
    """Positions 0, 1, ... of a candidate folder are rows the classifier was fitted on, and held-out externals,
    of the audit's dataset: neither matters, the images are new files."""
    rows = np.intersect1d(digits_split.holdout, digits_split.members)[:40]
    folder = _folder(folder_audit["work"] / "new", digits, rows)
    code, text = invoke(*_folder_base(setup, folder_audit), "--images", folder, "--json",
                        "--out", folder_audit["work"] / "new.csv")
    assert code == 0, text
    result = json.loads(text)
    n_cal = len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert result["calibration_excluded"] == 0 and result["verdict"]["n_calibration"] == n_cal
    assert result["verdict"]["n_candidates"] == 40 and result["label_source"] == "true"


def test_files_of_the_audits_dataset_are_found_by_path(setup: dict[str, Path], folder_audit: dict[str, Path],
                                                       digits_split: MembershipSplit,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMINT_CACHE", str(folder_audit["work"] / "cache"))
    root, work = folder_audit["root"], folder_audit["work"]
    # The dataset's own folder holds the rows the classifier was fitted on: refused, naming a file.
    code, text = invoke(*_folder_base(setup, folder_audit), "--images", root, "--out", work / "all.csv")
    assert code == 1 and text.strip().count("\n") == 0, text
    n_pool = len(digits_split.pool)
    assert f"error: {n_pool} candidates were used to fit the MINT classifier" in text and ".png)" in text
    # Links to held-out files of the dataset are those rows: the externals among them leave the calibration.
    externals = np.intersect1d(digits_split.holdout, digits_split.external)[:7]
    members = np.intersect1d(digits_split.holdout, digits_split.members)[:5]
    for i in (*externals, *members):
        _link(work / "links", next(root.glob(f"*/{i}.png")))
    code, text = invoke(*_folder_base(setup, folder_audit), "--images", work / "links", "--json",
                        "--out", work / "links.csv")
    assert code == 0, text
    result = json.loads(text)
    n_cal = len(np.intersect1d(digits_split.holdout, digits_split.external))
    assert result["calibration_excluded"] == 7 and result["verdict"]["n_calibration"] == n_cal - 7
    # A link to a file the classifier was fitted on is that file.
    _link(work / "links", next(root.glob(f"*/{digits_split.pool[0]}.png")))
    code, text = invoke(*_folder_base(setup, folder_audit), "--images", work / "links", "--out", work / "l2.csv")
    assert code == 1 and "error: 1 candidates were used to fit the MINT classifier" in text
    assert f"copy-{digits_split.pool[0]}.png" in text


def test_rows_that_cannot_be_told_apart_are_refused_saying_so(setup: dict[str, Path], folder_audit: dict[str, Path],
                                                              digits: ImageSet, digits_split: MembershipSplit,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from gmint.assess.candidates import load_image_folder
    from gmint.assess.scoring import score_samples
    from gmint.errors import InputError
    from gmint.mint import TrainedMint

    monkeypatch.setenv("GMINT_CACHE", str(folder_audit["work"] / "cache"))
    audited, mint = load_audited(setup["model"]), TrainedMint.load(folder_audit["mint"])
    assert mint.spec.dataset_root == str(folder_audit["root"].resolve())
    candidates = load_image_folder(folder_audit["root"], audited)
    # A classifier that does not record where its rows were read from (an older gmint): said, not guessed.
    older = replace(mint, spec=replace(mint.spec, dataset_root=None, dataset_files_sha256=None))
    with pytest.raises(InputError, match=r"^cannot tell whether the candidates are files of the MINT classifier's "
                                         r"imagefolder rows: it does not record the folder"):
        score_samples(audited, older, candidates, np.arange(3))
    # The folder changed since the classifier's store was read from it: its row ids name other files.
    changed = replace(mint, spec=replace(mint.spec, dataset_files_sha256="0" * 64))
    with pytest.raises(InputError, match=r"has changed since the MINT classifier was written: its files differ"):
        score_samples(audited, changed, candidates, np.arange(3))
    # Rows of the same dataset read from the same folder are matched by id.
    data = load_dataset("imagefolder", folder_audit["root"], cache=False)
    fitted = int(mint.fitted_ids[0])
    with pytest.raises(InputError, match="1 candidates were used to fit the MINT classifier"):
        score_samples(audited, mint, data, np.array([fitted]))
