"""The most exposed records: the true top-K, their CSV and contact sheet, `gmint eval --top` and
`gmint score --top`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmint.assess.evaluate import evaluate_store
from gmint.assess.exposure import contact_sheet, exposed_members, top_k, write_csv
from gmint.data.base import ImageSet
from gmint.errors import InputError
from gmint.features.store import FeatureStore
from gmint.mint import train_mint
from tests.cli_runner import invoke


def test_top_k_is_the_true_top_k_with_ties_by_row_id() -> None:
    rng = np.random.default_rng(0)
    ids = rng.permutation(500) + 1000
    score = np.round(rng.random(500), 2)  # many ties
    member = rng.random(500) < 0.5
    got = top_k(ids, score, ids % 10, score * 2, 25, mask=member)
    expected = sorted((-s, i) for s, i, m in zip(score, ids, member, strict=True) if m)[:25]
    assert [(-r.score, r.sample_id) for r in got] == [(s, i) for s, i in expected]
    assert [r.rank for r in got] == list(range(1, 26))
    assert all(r.label == r.sample_id % 10 and r.loss == pytest.approx(2 * r.score) for r in got)
    assert len(top_k(ids[:3], score[:3], ids[:3], score[:3], 10)) == 3
    with pytest.raises(InputError, match="the exposure list needs a positive number of records, got 0"):
        top_k(ids, score, ids, score, 0)


def test_exposed_members_of_an_evaluation(tmp_path: Path, digits: ImageSet, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    result = evaluate_store(mint, digits_store, n_boot=0)
    records = exposed_members(result, digits_store, 6)
    members = result.scores.membership == 1
    assert [r.score for r in records] == pytest.approx(np.sort(result.scores.score[members])[::-1][:6])
    assert set(r.sample_id for r in records) <= set(result.scores.sample_id[members].tolist())
    with FeatureStore.open(digits_store) as store:
        at = {int(i): p for p, i in enumerate(store.column("sample_id"))}
        for r in records:
            assert r.label == store.column("label")[at[r.sample_id]] == digits.labels[r.sample_id]
            assert r.loss == pytest.approx(float(store.column("loss")[at[r.sample_id]]))
    path = write_csv(records, tmp_path / "top.csv")
    with path.open() as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0]) == ["rank", "sample_id", "label", "score", "loss"]
    assert [int(x["sample_id"]) for x in lines] == [r.sample_id for r in records]
    png = contact_sheet(records, digits, tmp_path / "top.png", title="top")
    assert Image.open(png).size[0] > 100
    foreign = [type(records[0])(1, 10**9, 0, 0.5, 0.1)]
    with pytest.raises(InputError, match="row 1000000000 is not in digits"):
        contact_sheet(foreign, digits, tmp_path / "x.png")


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("exposure")
    for args in (("split", "--data", "digits", "--seed", "2", "--out", work / "split.json"),
                 ("audited", "train", "--arch", "small_cnn", "--data", "digits", "--split", work / "split.json",
                  "--epochs", "2", "--width", "0.25", "--out", work / "model.pt"),
                 ("extract", "--model", work / "model.pt", "--out", work / "f.h5"),
                 ("train", work / "f.h5", "--kind", "logreg", "--out", work / "m.pt")):
        code, out = invoke(*args)
        assert code == 0, out
    return work / "model.pt", work / "f.h5", work / "m.pt"


def test_eval_top_writes_csv_and_sheet(tmp_path: Path, cli_model: tuple[Path, Path, Path]) -> None:
    _, store, mint = cli_model
    code, out = invoke("eval", mint, store, "--top", "4")
    assert code == 1 and "--top writes exposed.csv and exposed.png into the --report folder" in out
    code, out = invoke("eval", mint, store, "--top", "4", "--n-boot", "5", "--report", tmp_path / "r")
    assert code == 0, out
    with (tmp_path / "r" / "exposed.csv").open() as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == 4 and [float(x["score"]) for x in lines] == sorted((float(x["score"]) for x in lines),
                                                                             reverse=True)
    with (tmp_path / "r" / "scores.csv").open() as fh:
        scored = [x for x in csv.DictReader(fh) if x["membership"] == "1"]
    best = max(float(x["score"]) for x in scored)
    assert float(lines[0]["score"]) == pytest.approx(best)
    assert (tmp_path / "r" / "exposed.png").stat().st_size > 0 and "exposed #1: row" in out


def test_score_top_writes_the_candidates_top(tmp_path: Path, cli_model: tuple[Path, Path, Path]) -> None:
    model, store, mint = cli_model
    code, out = invoke("score", "--model", model, "--mint", mint, "--store", store, "--data", "digits", "--rows",
                       "holdout-members", "--top", "3", "--out", tmp_path / "scores.csv")
    assert code == 0, out
    with (tmp_path / "scores.csv").open() as fh:
        scores = {int(x["sample_id"]): float(x["score"]) for x in csv.DictReader(fh)}
    with (tmp_path / "scores-top.csv").open() as fh:
        top = list(csv.DictReader(fh))
    expected = sorted(scores, key=lambda i: (-scores[i], i))[:3]
    assert [int(x["sample_id"]) for x in top] == expected
    assert (tmp_path / "scores-top.png").stat().st_size > 0
    code, out = invoke("score", "--model", model, "--mint", mint, "--store", store, "--data", "digits", "--rows",
                       "holdout-members", "--top", "3", "--out", tmp_path / "scores.csv")
    assert code == 1 and "exists" in out
