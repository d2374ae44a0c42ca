"""Reference models and the attacks that read them: exact scores on hand-made signals, the offline guarantee, the
calibrated scorer's chance level, and the CLI on digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, UnknownNameError
from gmint.models.io import load_audited
from gmint.models.train import TrainConfig, train_audited
from gmint.reference import ATTACKS, NotApplicable, ReferenceDraw, ReferenceSet, Task, compare_attacks, train_references
from gmint.reference.calibrated import calibrate
from gmint.reference.design import candidate_rows, paired_halves
from gmint.reference.lira import logit_confidence
from gmint.reference.signals import GradientSignals, OutputSignals, ReferenceSignals
from tests.cli_runner import run

TINY = TrainConfig(epochs=2, batch_size=64)

# Six rows: a pool member and external (0, 1), a held-out member and external (2, 3), two population rows (4, 5).
IDS = np.arange(6)
MEMBERSHIP = np.array([1, 0, 1, 0, -1, -1], np.int8)
ROLE = np.array([0, 0, 1, 1, -1, -1], np.int8)
AUDITED_LOSS = np.array([0.05, 1.2, 0.02, 0.9, 0.4, 2.0])
REFERENCE_LOSS = np.array([[0.7, 1.1, 0.3, 1.5, 0.2, 1.8],
                           [0.4, 2.0, 0.6, 0.8, 0.9, 0.5]])
OFFLINE = np.array([[0, 0, 0, 0, 1, 0],       # reference 0 trained on population row 4, reference 1 on row 5
                    [0, 0, 0, 0, 0, 1]], bool)


def signals(loss: np.ndarray = REFERENCE_LOSS, inclusion: np.ndarray = OFFLINE, mode: str = "offline",
            audited_loss: np.ndarray = AUDITED_LOSS) -> ReferenceSignals:
    output = OutputSignals(IDS, MEMBERSHIP, ROLE, np.zeros(6, np.int64), audited_loss, loss, inclusion,
                           np.ones(6, bool))
    return ReferenceSignals(mode, output)


def phi(loss: float) -> float:
    p = math.exp(-loss)
    return math.log(p / (1 - p))


def normal_logpdf(x: float, mu: float, sigma: float) -> float:
    return -0.5 * math.log(2 * math.pi * sigma ** 2) - (x - mu) ** 2 / (2 * sigma ** 2)


SCORED = Task(fit=np.array([0, 1]), score=np.array([2, 3, 0]))


def test_logit_confidence_is_log_odds_of_the_true_class() -> None:
    losses = np.array([1e-6, 0.1, 0.693, 3.0, 20.0])
    np.testing.assert_allclose(logit_confidence(losses), [phi(v) for v in losses], rtol=1e-9)
    assert np.isfinite(logit_confidence(np.array([0.0]))).all()  # p_y rounded to 1 stays finite


def test_lira_offline_equals_the_hand_computed_z() -> None:
    got = ATTACKS.get("lira-offline")(signals(), SCORED)
    expected = []
    for row in (2, 3, 0):
        ref = [phi(REFERENCE_LOSS[k, row]) for k in range(2)]
        mu = sum(ref) / 2
        sigma = math.sqrt(sum((r - mu) ** 2 for r in ref) / 2)
        expected.append((phi(AUDITED_LOSS[row]) - mu) / sigma)
    np.testing.assert_allclose(got.score, expected, rtol=1e-9)
    assert got.params["variance"] == "per sample"


def test_lira_offline_global_uses_one_sigma_over_the_candidates_out_observations() -> None:
    got = ATTACKS.get("lira-offline-global")(signals(), SCORED)
    observations = [phi(REFERENCE_LOSS[k, row]) for k in range(2) for row in range(4)]
    mean = sum(observations) / len(observations)
    sigma = math.sqrt(sum((o - mean) ** 2 for o in observations) / len(observations))
    expected = [(phi(AUDITED_LOSS[row]) - (phi(REFERENCE_LOSS[0, row]) + phi(REFERENCE_LOSS[1, row])) / 2) / sigma
                for row in (2, 3, 0)]
    np.testing.assert_allclose(got.score, expected, rtol=1e-9)
    assert got.params["sigma_out"] == pytest.approx(sigma)


def test_lira_online_equals_the_hand_computed_likelihood_ratio() -> None:
    loss = np.array([[0.1, 1.0, 0.2, 0.7, 0.3, 0.5], [0.3, 1.6, 0.1, 0.4, 0.6, 0.2],
                     [0.9, 2.2, 0.8, 1.1, 0.2, 0.9], [1.4, 0.6, 1.3, 2.5, 0.7, 0.4]])
    inclusion = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], bool)
    got = ATTACKS.get("lira-online")(signals(loss, inclusion, "online"), SCORED)
    expected = []
    for row in (2, 3, 0):
        ins, outs = [phi(loss[k, row]) for k in (0, 1)], [phi(loss[k, row]) for k in (2, 3)]
        mu_in, mu_out = sum(ins) / 2, sum(outs) / 2
        s_in, s_out = abs(ins[0] - ins[1]) / 2, abs(outs[0] - outs[1]) / 2
        expected.append(normal_logpdf(phi(AUDITED_LOSS[row]), mu_in, s_in)
                        - normal_logpdf(phi(AUDITED_LOSS[row]), mu_out, s_out))
    np.testing.assert_allclose(got.score, expected, rtol=1e-9)


def test_rmia_offline_equals_the_hand_computed_pairwise_test() -> None:
    a, gamma = 0.5, 1.0
    got = ATTACKS.get("rmia")(signals(), Task(SCORED.fit, SCORED.score, options={"a": a}))

    def pr(row: int) -> float:  # Pr(x) from the reference models out of the row
        outs = [math.exp(-REFERENCE_LOSS[k, row]) for k in range(2) if not OFFLINE[k, row]]
        return 0.5 * ((1 + a) * sum(outs) / len(outs) + (1 - a))

    def ratio(row: int) -> float:
        return math.exp(-AUDITED_LOSS[row]) / pr(row)

    expected = [sum(ratio(x) / ratio(z) > gamma for z in (4, 5)) / 2 for x in (2, 3, 0)]
    np.testing.assert_allclose(got.score, expected)
    assert got.params["a"] == a and got.params["population"] == 2 and got.params["a_fitted_on"] == "given"
    assert expected != [expected[0]] * 3  # the case separates the rows


def test_rmia_fits_a_on_a_grid_and_records_where() -> None:
    got = ATTACKS.get("rmia")(signals(), SCORED)
    assert got.params["a"] in [round(0.1 * i, 1) for i in range(11)]
    # two models, one each of every pool row: neither can stand in for the audited model
    assert "auditor's pool" in str(got.params["a_fitted_on"])
    assert len(got.params["a_fit_auc"]) == 11  # type: ignore[arg-type]


def test_online_attacks_refuse_an_offline_set() -> None:
    for name in ("lira-online", "rmia-online"):
        with pytest.raises(NotApplicable, match="online reference set"):
            ATTACKS.get(name)(signals(), SCORED)
    with pytest.raises(NotApplicable, match="needs ≥ 2 reference models out of each scored row, has 1"):
        ATTACKS.get("lira-offline")(signals().first(1), SCORED)


def gradient_signals(reference: np.ndarray, rng: np.random.Generator, n: int = 240) -> tuple[GradientSignals,
                                                                                              ReferenceSignals]:
    membership = np.tile([1, 0], n // 2).astype(np.int8)
    role = np.repeat([0, 1], n // 2).astype(np.int8)
    audited = rng.normal(size=(n, 6)).astype(np.float32) + 2.0 * membership[:, None]
    ref = reference if reference.ndim == 3 else np.stack([audited] * int(reference))
    ids = np.arange(n)
    gradient = GradientSignals(ids, membership, role, np.zeros(n, np.int64), audited, ref,
                               np.zeros((len(ref), n), bool), ["a.weight", "b.weight"], [4, 2], np.ones(n, bool))
    output = OutputSignals(ids, membership, role, np.zeros(n, np.int64), np.ones(n), np.ones((len(ref), n)),
                           np.zeros((len(ref), n), bool), np.ones(n, bool))
    return gradient, ReferenceSignals("offline", output, gradient)


def test_calibrating_against_the_audited_model_itself_gives_chance() -> None:
    rng = np.random.default_rng(0)
    for k in (1, 2, 4):
        _, sig = gradient_signals(np.array(k), rng)
        quick = {"mint_options": {"max_epochs": 30}}
        comparison = compare_attacks(sig, ["gmint", "gmint-calibrated", "gmint-calibrated-norms"], [k], n_boot=1,
                                     options=dict.fromkeys(("gmint", "gmint-calibrated", "gmint-calibrated-norms"),
                                                           quick))
        by_name = {r.attack: r.metrics for r in comparison.results}
        assert by_name["gmint"]["auc"].value > 0.9  # type: ignore[index]  # the features do separate the sides
        assert by_name["gmint-calibrated"]["auc"].value == 0.5  # type: ignore[index]
        assert by_name["gmint-calibrated-norms"]["auc"].value == 0.5  # type: ignore[index]


def test_calibrate_is_the_per_sample_z_score() -> None:
    rng = np.random.default_rng(1)
    audited, reference = rng.normal(size=(5, 3)), rng.normal(size=(4, 5, 3))
    out = np.ones((4, 5), bool)
    z, params = calibrate(audited, reference, out, np.arange(5), per_sample_min=4)
    np.testing.assert_allclose(z, (audited - reference.mean(0)) / reference.std(0))
    assert params["variance"] == "per sample"
    z, params = calibrate(audited, reference[:1], out[:1], np.arange(5), per_sample_min=4)
    np.testing.assert_allclose(z, (audited - reference[0]) / reference[0].std(0))
    assert params["variance"] == "spread over rows, per feature"


def test_calibrated_gmint_pools_sigma_below_lira_crossover() -> None:
    """With 8 out models a row's own σ is noisy (the default waits for 64, as LiRA advises); the option
    still gives the per-sample σ."""
    rng = np.random.default_rng(2)
    _, sig = gradient_signals(rng.normal(size=(8, 240, 6)), rng)
    quick = {"mint_options": {"max_epochs": 5}}
    pooled = compare_attacks(sig, ["gmint-calibrated"], [8], n_boot=1, options={"gmint-calibrated": quick})
    assert pooled.results[0].params["variance"] == "pooled within-sample, per feature"
    own = compare_attacks(sig, ["gmint-calibrated"], [8], n_boot=1,
                          options={"gmint-calibrated": {**quick, "per_sample_min": 8}})
    assert own.results[0].params["variance"] == "per sample"


def test_paired_halves_balance_every_even_prefix() -> None:
    units = np.arange(101)
    design = paired_halves(units, 8, seed=3)
    for k in (2, 4, 6, 8):
        np.testing.assert_array_equal(design[:k].sum(axis=0), k // 2)
    np.testing.assert_array_equal(paired_halves(units, 4, seed=3), design[:4])  # K = 4 is the prefix of K = 8
    assert design[0].sum() == 50
    grouped = paired_halves(np.repeat(np.arange(10), 3), 2, seed=0)  # whole groups on one side
    assert all(len(set(grouped[0, 3 * g:3 * g + 3])) == 1 for g in range(10))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, digits: ImageSet,
          digits_control_split: MembershipSplit) -> tuple[Path, MembershipSplit]:
    folder = tmp_path_factory.mktemp("reference")
    split = digits_control_split
    split.save(folder / "split.json")
    train_audited(digits, split, arch="small_cnn", transform=Transform(), config=TINY, out=folder / "audited.pt",
                  arch_options={"width": 0.25})
    return folder, split


def test_offline_reference_models_never_train_on_a_candidate(setup: tuple[Path, MembershipSplit],
                                                              digits: ImageSet) -> None:
    folder, split = setup
    manifest = train_references(digits, folder / "audited.pt", folder / "offline", ReferenceDraw("offline", k=2))
    candidates = candidate_rows(split)
    assert not manifest.included(candidates).any()
    for i in range(2):
        meta = load_audited(folder / "offline" / manifest.model_file(i)).meta
        assert meta["trained_on"] == "rows"
        np.testing.assert_array_equal(meta["rows"], manifest.rows_of(i))
        assert not np.isin(meta["rows"], candidates).any()
        assert meta["train_config"]["epochs"] == TINY.epochs and meta["arch_args"]["width"] == 0.25  # the recipe
    pool = np.asarray(split.control)
    np.testing.assert_array_equal(manifest.included(pool).sum(axis=0), 1)  # a pair splits the population
    assert ReferenceSet.load(folder / "offline") == manifest


def test_models_trained_in_worker_processes_equal_the_sequential_ones(setup: tuple[Path, MembershipSplit],
                                                                     digits: ImageSet, tmp_path: Path) -> None:
    """Each model is seeded and trained alone, so two workers give the weights of the sequential loop; a pool
    also resumes a set it only half trained, keeping the finished model's file."""
    folder, _ = setup
    sequential = train_references(digits, folder / "audited.pt", tmp_path / "one", ReferenceDraw("online", k=3))
    train_references(digits, folder / "audited.pt", tmp_path / "two", ReferenceDraw("online", k=1))
    first = (tmp_path / "two" / sequential.model_file(0)).read_bytes()
    parallel = train_references(digits, folder / "audited.pt", tmp_path / "two", ReferenceDraw("online", k=3),
                                workers=2, resume=True)
    assert parallel == sequential and (tmp_path / "two" / sequential.model_file(0)).read_bytes() == first
    for i in range(3):
        one = load_audited(tmp_path / "one" / sequential.model_file(i))
        two = load_audited(tmp_path / "two" / sequential.model_file(i))
        assert one.meta["rows"] == two.meta["rows"] and one.meta["record"] == two.meta["record"]
        for a, b in zip(one.module.state_dict().values(), two.module.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(InputError, match="workers must be at least 1"):
        train_references(digits, folder / "audited.pt", tmp_path / "two", ReferenceDraw("online", k=3), workers=0,
                         resume=True)


def test_online_reference_models_hold_each_candidate_in_half(setup: tuple[Path, MembershipSplit],
                                                             digits: ImageSet) -> None:
    from gmint.reference.design import design_references

    folder, split = setup
    manifest = design_references(load_audited(folder / "audited.pt"), folder / "audited.pt", digits,
                                 ReferenceDraw("online", k=4))
    np.testing.assert_array_equal(manifest.included(candidate_rows(split)).sum(axis=0), 2)


def test_an_offline_manifest_that_trains_on_a_candidate_is_refused(setup: tuple[Path, MembershipSplit]) -> None:
    from gmint.reference.design import check_offline

    _, split = setup
    pool = sorted(split.control[:5] + split.members[:1])
    bad = ReferenceSet("offline", 1, 0, "audited", "a.pt", "f", "digits", split.sha256, pool,
                       [[1] * len(pool)])
    with pytest.raises(InputError, match="offline reference model 0 would train on 1 candidate rows"):
        check_offline(bad, split)


def test_training_rows_are_part_of_the_resume_recipe(tmp_path: Path, digits: ImageSet,
                                                     digits_split: MembershipSplit) -> None:
    common = {"arch": "small_cnn", "transform": Transform(), "arch_options": {"width": 0.25},
              "config": TrainConfig(epochs=1)}
    train_audited(digits, digits_split, out=tmp_path / "r.pt", trained_on=[5, 3, 9, 11], **common)  # type: ignore[arg-type]
    meta = load_audited(tmp_path / "r.pt").meta
    assert meta["rows"] == [3, 5, 9, 11] and meta["trained_on"] == "rows"
    with pytest.raises(InputError, match=r"different rows \(4 → 3 rows, not the same set\)"):
        train_audited(digits, digits_split, out=tmp_path / "r.pt", trained_on=[3, 5, 9], resume=True, **common)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="given twice"):
        train_audited(digits, digits_split, out=tmp_path / "s.pt", trained_on=[3, 3], **common)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no training rows given"):
        train_audited(digits, digits_split, out=tmp_path / "s.pt", trained_on=[], **common)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=rf"must lie in 0\.\.{len(digits) - 1}"):
        train_audited(digits, digits_split, out=tmp_path / "s.pt", trained_on=[3, len(digits)], **common)  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="unknown training rows 'rows'"):  # what given rows are recorded as
        train_audited(digits, digits_split, out=tmp_path / "s.pt", trained_on="rows", **common)  # type: ignore[arg-type]
    assert not (tmp_path / "s.pt").exists()


def test_cli_trains_extracts_and_compares(setup: tuple[Path, MembershipSplit], tmp_path: Path) -> None:
    folder, _ = setup
    refs, report = tmp_path / "refs", tmp_path / "report"
    result = run("reference", "train", "--model", folder / "audited.pt", "--k", "2", "--out", refs, "--workers", "2")
    assert result.code == 0, result.stderr
    again = run("reference", "train", "--model", folder / "audited.pt", "--k", "2", "--out", refs)
    assert again.code == 1 and "--resume" in again.stderr
    result = run("reference", "extract", refs)
    assert result.code == 0, result.stderr
    result = run("reference", "attack", refs, "--attacks", "loss,lira-offline,rmia", "--k", "1,2", "--n-boot", "20",
                 "--report", report, "--json")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    by = {(r["attack"], r["k"]): r for r in payload["results"]}
    assert sorted(by) == [("lira-offline", 1), ("lira-offline", 2), ("loss", 0), ("rmia", 1), ("rmia", 2)]
    assert by[("lira-offline", 1)]["unresolved"] == "needs ≥ 2 reference models out of each scored row, has 1"
    assert by[("loss", 0)]["metrics"]["tpr_at_0.1pct_fpr"]["unresolved"].startswith("needs ≥ 1,000 externals")
    assert "auc_minus_loss_threshold" in by[("rmia", 2)] and "auc_minus_loss_threshold" not in by[("loss", 0)]
    assert sorted(p.name for p in report.iterdir()) == ["comparison.json", "comparison.md", "roc_log.png",
                                                       "scores.csv", "vs_k.png"]
    header = (report / "scores.csv").read_text().splitlines()[0]
    assert header == "sample_id,membership,loss,lira-offline (K=2),rmia (K=1),rmia (K=2)"
    # RMIA's AUC is the share of (member, external) pairs whose member scores higher (ties half), over the rows
    # the report lists
    table = np.loadtxt(report / "scores.csv", delimiter=",", skiprows=1)
    members, external = table[table[:, 1] == 1, 5], table[table[:, 1] == 0, 5]
    assert len(members) and len(external) and len(members) + len(external) == len(table)
    wins = (members[:, None] > external[None, :]).mean() + 0.5 * (members[:, None] == external[None, :]).mean()
    assert by[("rmia", 2)]["metrics"]["auc"]["value"] == pytest.approx(wins, abs=1e-12)
    # gmint eval shows the same attacks beside the classifier's own result, with every model of the set
    mint = tmp_path / "mint.pt"
    assert run("train", refs / "audited-gradient.h5", "--out", mint).code == 0
    result = run("eval", mint, refs / "audited-gradient.h5", "--references", refs, "--n-boot", "20", "--json")
    assert result.code == 0, result.stderr
    payload = json.loads(result.stdout)
    attacks = {(r["attack"], r["k"]) for r in payload["references"]["results"]}
    assert {("rmia", 2), ("lira-offline-global", 2), ("gmint-calibrated", 2), ("loss", 0)} <= attacks
    assert "auc" in payload["mint"]


def test_intervals_resample_whole_groups_where_the_rows_carry_them() -> None:
    rng = np.random.default_rng(1)
    n = 120
    membership = np.repeat([1, 0], n // 2).astype(np.int8)
    role = np.tile(np.repeat([0, 1], 15), 4).astype(np.int8)
    loss = rng.random(n) + 0.5 * (membership == 0)
    ref = rng.random((2, n))
    for group, expected in ((None, "rows"), (np.arange(n) // 5, "whole groups (12 groups of rows)")):
        output = OutputSignals(np.arange(n), membership, role, np.zeros(n, np.int64), loss, ref,
                               np.zeros((2, n), bool), np.ones(n, bool), group)
        comparison = compare_attacks(ReferenceSignals("offline", output), ["loss"], [1], n_boot=20)
        assert comparison.intervals == expected == comparison.to_dict()["intervals"]
