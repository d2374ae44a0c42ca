"""The set-level verdict: its false-positive rate on external-only sets, its power on an overfit model, and
the checks that keep a verdict honest (unfitted calibration, candidates as the model expects them)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmint.assess.candidates import holdout_rows, load_image_folder, match_channels, read_row_ids, subsample
from gmint.assess.scoring import audit_set, calibration_scores, score_samples
from gmint.assess.verdict import set_test
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.features.extract import Rows, extract
from gmint.features.settings import ExtractSettings
from gmint.mint import TrainedMint, train_mint
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig, train_audited

ALPHA, N_SETS = 0.05, 400
MARGIN = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / N_SETS)  # binomial allowance of the simulation


def false_positive_rate(external: Sequence[float] | np.ndarray, calibration: Sequence[float] | np.ndarray,
                        set_size: int, n_sets: int, seed: int = 0, *, resplit: bool = False) -> float:
    """Fraction of external-only candidate sets on which `set_test` rejects H0 at ALPHA (should be ≤ α).

    Each set draws `set_size` scores without replacement from `external` (disjoint from the calibration) and
    is tested against `calibration`. With `resplit=False` the calibration stays fixed: the rate an audit with
    *this* calibration makes, which varies around α with the calibration sample itself (the test's guarantee
    holds on average over calibration draws). With `resplit=True` every set re-partitions the external and
    calibration scores together at random, so the rate estimates that average.
    """
    ext, cal = np.asarray(external, np.float64), np.asarray(calibration, np.float64)
    rng = np.random.default_rng(seed)
    if not resplit:
        return _rejection_rate([(rng.choice(ext, set_size, replace=False), cal) for _ in range(n_sets)])
    pooled = np.concatenate([ext, cal])
    orders = [rng.permutation(len(pooled)) for _ in range(n_sets)]
    return _rejection_rate([(pooled[o[:set_size]], pooled[o[set_size:set_size + len(cal)]]) for o in orders])


def power(members: Sequence[float] | np.ndarray, calibration: Sequence[float] | np.ndarray, set_size: int,
          n_sets: int, seed: int = 0) -> float:
    """Fraction of member-only candidate sets (drawn without replacement from `members`, held out from the
    classifier's fit) on which `set_test` rejects H0 at ALPHA against the calibration."""
    rng = np.random.default_rng(seed)
    return _rejection_rate([(rng.choice(np.asarray(members), set_size, replace=False), np.asarray(calibration))
                            for _ in range(n_sets)])


def _rejection_rate(draws: list[tuple[np.ndarray, np.ndarray]]) -> float:
    return float(np.mean([set_test(c, e).rejects(ALPHA) for c, e in draws]))


@pytest.fixture(scope="module")
def mint(digits_store: Path) -> TrainedMint:
    return train_mint(digits_store, kind="mlp", setup="combined", seed=0)


def _holdout(split: MembershipSplit, side: list[int]) -> np.ndarray:
    return np.intersect1d(split.holdout, side)


# -- the test itself -------------------------------------------------------------------------------------


def test_set_test_matches_hand_computed_values() -> None:
    v = set_test([3.0, 4.0], [1.0, 2.0])  # U = 4 of 4 pairs; exact P(U >= 4) = 1 / C(4, 2)
    assert v.statistic == 4.0 and v.p_value == pytest.approx(1 / 6) and "exact" in v.test
    assert v.effect == 1.0 and v.mean_candidate == 3.5 and v.mean_calibration == 1.5
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.3, 1, 40), rng.normal(0, 1, 400)  # n·m too large for the exact distribution
    v = set_test(x, y)
    u = float((x[:, None] > y[None, :]).sum())
    z = (u - 0.5 * 40 * 400 - 0.5) / math.sqrt(40 * 400 * (40 + 400 + 1) / 12)
    assert v.statistic == u and v.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert "normal approximation" in v.test and "one-sided" in v.test and "Mann-Whitney U" in v.test
    assert v.rejects(0.05) == (v.p_value <= 0.05)
    assert "small samples with ties" in set_test([0.5, 1.0, 1.0], [0.5, 0.0, 0.0, 1.0]).test


def test_conclusion_never_claims_absence() -> None:
    assert "Evidence that these samples were used" in set_test(np.arange(10, 20), np.arange(10)).conclusion(0.05)
    text = set_test(np.arange(10), np.arange(10, 20)).conclusion(0.05)
    assert text.startswith("No evidence") and "not proof of absence" in text
    with pytest.raises(InputError, match="alpha"):
        set_test([1.0], [0.0]).rejects(1.5)
    with pytest.raises(InputError, match="NaN"):
        set_test([np.nan], [0.0])


def _continuous(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.beta(2, 5, n)


def _tied(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores of a saturated classifier: a few distinct values, half of them exactly 0 or 1."""
    return np.clip(np.round(rng.normal(0.5, 0.6, n), 1), 0.0, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("draw, n, m, method", [
    (_continuous, 50, 300, "normal approximation"),
    (_continuous, 5, 8, "exact"),
    (_tied, 40, 200, "normal approximation"),
    (_tied, 4, 6, "permutation"),
])
def test_false_positive_rate_at_most_alpha_on_synthetic_external_sets(draw, n: int, m: int, method: str) -> None:
    """Candidates and calibration drawn afresh from one distribution every time: the marginal rate."""
    rng = np.random.default_rng(n * 1000 + m)
    verdicts = [set_test(draw(rng, n), draw(rng, m)) for _ in range(N_SETS)]
    assert method in verdicts[0].test
    assert np.mean([v.rejects(ALPHA) for v in verdicts]) <= MARGIN


def test_false_positive_rate_function_and_what_a_biased_calibration_does() -> None:
    rng = np.random.default_rng(1)
    external, calibration = _tied(rng, 2000), _tied(rng, 300)
    assert false_positive_rate(external, calibration, 50, N_SETS, resplit=True) <= MARGIN
    # Calibration rows the classifier learnt as external score lower than fresh externals: every fresh
    # external set then looks like members. This is why fitted rows are refused as calibration.
    fitted = np.clip(calibration - 0.15, 0.0, 1.0)
    assert false_positive_rate(external, fitted, 50, 200) > 0.5
    assert power(external + 0.3, calibration, 50, 200) > 0.9


@pytest.mark.slow
def test_false_positive_rate_at_most_alpha_on_real_digits_scores(mint: TrainedMint, digits_store: Path) -> None:
    """External-only sets from the digits audit's held-out external scores (never fitted), re-split at random
    into candidates and calibration for every set: the rate the verdict's guarantee is about."""
    cal = calibration_scores(mint, digits_store)
    half = len(cal.score) // 2
    assert false_positive_rate(cal.score[:half], cal.score[half:], 50, N_SETS, resplit=True) <= MARGIN


# -- power on an overfit audited model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def overfit(digits: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditedModel, TrainedMint, Path,
                                                                                   np.ndarray]:
    """A small CNN trained 100 epochs on 200 digits (memorised: loss ~1e-3 vs ~0.1 on the rest); 100 members
    and 100 externals fit the MINT classifier, the other 100 members and 1,497 externals are held out."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits))
    members, external = np.sort(order[:200]), np.sort(order[200:])
    pool = np.sort(np.r_[members[:100], external[:100]])
    holdout = np.sort(np.r_[members[100:], external[100:]])
    split = MembershipSplit("digits", "paper", 0, members.tolist(), external.tolist(), pool.tolist(),
                            holdout.tolist())
    work = tmp_path_factory.mktemp("overfit")
    model = train_audited(digits, split, arch="small_cnn", transform=Transform(), out=work / "audited.pt",
                          config=TrainConfig(epochs=100, batch_size=16), arch_options={"width": 0.5})
    assert model.meta["record"]["members_loss"] < 0.01  # memorised
    index = np.r_[pool, holdout]
    rows = Rows(index, np.isin(index, members).astype(np.int8), np.isin(index, holdout).astype(np.int8))
    store = extract(model, digits, rows, ExtractSettings(layer_setup="combined", batch_size=256),
                    out=work / "features.h5", split=split)
    return model, train_mint(store, kind="mlp", setup="combined", seed=0), store, members[100:]


@pytest.mark.slow
def test_power_on_member_sets_of_an_overfit_model(overfit, digits: ImageSet) -> None:
    model, classifier, store, held_members = overfit
    cal = calibration_scores(classifier, store)
    members = score_samples(model, classifier, digits, held_members, like=cal.provenance).score
    assert power(members, cal.score, 50, N_SETS) > 0.9
    # ... while external-only sets of the same audit stay at α.
    assert false_positive_rate(cal.score[:700], cal.score[700:], 50, N_SETS, resplit=True) <= MARGIN


# -- what keeps a verdict honest -------------------------------------------------------------------------


def test_calibration_rows_used_for_fitting_are_refused(mint: TrainedMint, digits_store: Path,
                                                       digits_split: MembershipSplit) -> None:
    leaked = replace(mint, fitted_ids=np.r_[mint.fitted_ids, _holdout(digits_split, digits_split.external)[:3]])
    with pytest.raises(InputError, match="3 calibration rows .* were used to fit"):
        calibration_scores(leaked, digits_store)


def test_candidates_the_classifier_was_fitted_on_or_listed_twice_are_refused(
        mint: TrainedMint, audited_digits: tuple[AuditedModel, Path], digits: ImageSet) -> None:
    with pytest.raises(InputError, match="used to fit the MINT classifier"):
        score_samples(audited_digits[0], mint, digits, mint.fitted_ids[:5])
    with pytest.raises(InputError, match="more than once"):
        score_samples(audited_digits[0], mint, digits, np.array([1, 1]))


@pytest.mark.parametrize("bad", [1797, -1])
def test_candidate_rows_outside_the_data_are_refused_before_anything_is_read(
        bad: int, tmp_path: Path, mint: TrainedMint, audited_digits: tuple[AuditedModel, Path],
        digits: ImageSet) -> None:
    """-1 would silently be the last row, 1797 an IndexError: both name the row and the range instead, before
    the calibration store (here one that does not exist) is opened."""
    with pytest.raises(InputError, match=rf"^row {bad} is outside the 1797 rows of digits \(0 to 1796\)$"):
        audit_set(audited_digits[0], mint, digits, np.array([3, bad, 5]), calibration=tmp_path / "none.h5")


def _write_folder(root: Path, digits: ImageSet, rows: np.ndarray, *, size: int = 8, colour: bool = False) -> Path:
    for i in rows:
        pixels = digits.images[i, :, :, 0]
        img = Image.fromarray(np.stack([pixels, pixels // 2, pixels // 3], -1) if colour else pixels)
        if size != pixels.shape[0]:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        folder = root / str(digits.labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i}.png")
    return root


def test_image_folder_scores_equal_the_dataset_rows(tmp_path: Path, mint: TrainedMint, digits: ImageSet,
                                                    audited_digits: tuple[AuditedModel, Path],
                                                    digits_split: MembershipSplit) -> None:
    rows = _holdout(digits_split, digits_split.members)[:30]
    folder = load_image_folder(_write_folder(tmp_path / "same", digits, rows), audited_digits[0])
    assert set(np.unique(folder.labels)) <= set(range(10)) and folder.classes[3] == "3"
    by_file = {int(Path(f).stem): s for f, s in zip(folder.files, score_samples(audited_digits[0], mint,
                                                                                folder).score, strict=True)}
    from_data = score_samples(audited_digits[0], mint, digits, rows).score
    np.testing.assert_allclose([by_file[int(i)] for i in rows], from_data, atol=1e-5)


def test_wrong_size_images_are_resized_to_the_model_input(tmp_path: Path, mint: TrainedMint, digits: ImageSet,
                                                          audited_digits: tuple[AuditedModel, Path]) -> None:
    _write_folder(tmp_path / "mixed", digits, np.arange(10), size=16)
    _write_folder(tmp_path / "mixed", digits, np.arange(10, 20), size=8)
    folder = load_image_folder(tmp_path / "mixed", audited_digits[0])
    assert folder.images.shape == (20, 8, 8, 1)
    scores = score_samples(audited_digits[0], mint, folder)
    by_file = {int(Path(f).stem): s for f, s in zip(folder.files, scores.score, strict=True)}
    assert len(by_file) == 20
    # The images already at the model's side are scored as the same pixels from the dataset are.
    same = score_samples(audited_digits[0], mint, replace(digits.take(np.arange(10, 20)), name="same pixels"))
    np.testing.assert_allclose([by_file[i] for i in range(10, 20)], same.score, atol=1e-5)


def test_colour_images_for_a_grey_model_need_an_explicit_conversion(
        tmp_path: Path, mint: TrainedMint, digits: ImageSet, audited_digits: tuple[AuditedModel, Path]) -> None:
    folder = load_image_folder(_write_folder(tmp_path / "rgb", digits, np.arange(8), colour=True),
                               audited_digits[0])
    assert folder.images.shape[-1] == 3
    with pytest.raises(InputError, match=f"takes greyscale; {re.escape(Remedy.TO_GREY.value)}$") as err:
        score_samples(audited_digits[0], mint, folder)
    assert "\n" not in str(err.value) and "--" not in str(err.value)  # the library names no CLI option
    assert len(score_samples(audited_digits[0], mint, folder, to_grey=True)) == 8
    # Grey pixels stored as RGB are taken as they are; grey → RGB repeats the channel.
    grey = replace(digits, images=np.repeat(digits.images[:4], 3, -1), labels=digits.labels[:4],
                   sample_ids=digits.sample_ids[:4], part=digits.part[:4])
    assert np.array_equal(match_channels(grey, 1).images, digits.images[:4])
    assert match_channels(replace(grey, images=digits.images[:4]), 3).images.shape == (4, 8, 8, 3)
    with pytest.raises(InputError, match="4 channels"):
        match_channels(replace(grey, images=np.zeros((4, 8, 8, 4), np.uint8)), 3)


def test_folder_classes_must_be_classes_of_the_model(tmp_path: Path, digits: ImageSet,
                                                     audited_digits: tuple[AuditedModel, Path]) -> None:
    _write_folder(tmp_path / "cls", digits, np.arange(3))
    (tmp_path / "cls" / "cat").mkdir()
    Image.fromarray(digits.images[0, :, :, 0]).save(tmp_path / "cls" / "cat" / "a.png")
    with pytest.raises(InputError, match="'cat' is not a class"):
        load_image_folder(tmp_path / "cls", audited_digits[0])
    with pytest.raises(InputError, match="not found"):
        load_image_folder(tmp_path / "nowhere", audited_digits[0])


def test_one_candidate_gets_its_exact_rank_p_value() -> None:
    calibration = np.array([0.1, 0.2, 0.2, 0.4, 0.9])
    verdict = set_test([0.2], calibration)
    # 4 calibration scores are >= 0.2 (ties count against rejection): p = (1 + 4) / 6.
    assert verdict.p_value == pytest.approx(5 / 6)
    assert set_test([0.95], calibration).p_value == pytest.approx(1 / 6)
    assert "one candidate" in verdict.test


def test_every_calibration_row_a_candidate_is_refused_naming_the_remedy(
        mint: TrainedMint, digits_store: Path, digits_split: MembershipSplit) -> None:
    external = digits_split.external
    with pytest.raises(InputError, match=f"leaving nothing to calibrate on; {Remedy.SUBSET.value}$"):
        calibration_scores(mint, digits_store, exclude=_holdout(digits_split, external))
    left = calibration_scores(mint, digits_store, exclude=_holdout(digits_split, external)[:7])
    assert left.excluded == 7 and len(left.score) == len(_holdout(digits_split, external)) - 7


# -- candidate rows of a dataset -------------------------------------------------------------------------


def test_held_out_rows_of_the_split(digits_split: MembershipSplit) -> None:
    members, external = holdout_rows(digits_split, members=True), holdout_rows(digits_split, members=False)
    assert np.array_equal(members, np.intersect1d(digits_split.holdout, digits_split.members))
    assert np.array_equal(external, np.intersect1d(digits_split.holdout, digits_split.external))
    assert len(members) == len(external) > 0 and not np.isin(members, digits_split.pool).any()
    with pytest.raises(InputError, match="^the split holds out no members$"):
        holdout_rows(replace(digits_split, holdout=[]), members=True)


@pytest.mark.parametrize("text, message", [("[1, true]", "must hold a JSON list of integer row ids"),
                                           ('{"rows": [1]}', "must hold a JSON list of integer row ids"),
                                           ("[1, 2", "is not valid JSON"), ("[]", "lists no rows")])
def test_row_id_files(tmp_path: Path, text: str, message: str) -> None:
    listed = tmp_path / "ids.json"
    listed.write_text(json.dumps([5, 3, 9]))
    assert read_row_ids(listed).tolist() == [5, 3, 9]
    listed.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        read_row_ids(listed)
    assert "--" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        read_row_ids(tmp_path / "missing.json")


def test_subsample_is_seeded_sorted_and_bounded() -> None:
    index = np.arange(100, 300)
    sub = subsample(index, 20, seed=1)
    assert len(sub) == 20 and len(np.unique(sub)) == 20 and np.isin(sub, index).all()
    assert np.array_equal(sub, np.sort(sub)) and np.array_equal(sub, subsample(index, 20, seed=1))
    assert not np.array_equal(sub, subsample(index, 20, seed=2))
    for size in (0, 201):
        with pytest.raises(InputError, match=f"a subset of {size} must be between 1 and the 200 candidates"):
            subsample(index, size)


def test_permutation_p_value_matches_the_exact_enumeration_with_ties() -> None:
    import itertools

    from scipy import stats

    from gmint.assess.verdict import permutation_u_test

    x = np.array([0.9, 0.5, 0.5, 1.0])
    y = np.array([0.5, 0.1, 0.9, 0.0, 0.5, 1.0, 0.2, 0.5, 0.3, 0.0, 0.7, 0.5])
    ranks = stats.rankdata(np.concatenate([x, y]))
    sums = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(len(ranks)), len(x))])
    observed = ranks[: len(x)].sum()
    exact = {"greater": np.mean(sums >= observed - 1e-9), "less": np.mean(sums <= observed + 1e-9)}
    for alternative, p_exact in exact.items():
        u, p = permutation_u_test(x, y, alternative, resamples=200_000)
        assert u == stats.mannwhitneyu(x, y).statistic
        assert p == pytest.approx(p_exact, abs=0.004)  # Monte Carlo: sd ≈ 0.001 at 200,000 resamples
    # the draw that needs rejection (many rows) gives the same answer as the exhaustive one would
    many = np.r_[y, y, y, y, y, y, y, y, y, y]
    u, p = permutation_u_test(x, many, "greater", resamples=100_000)
    exact_p = stats.mannwhitneyu(x, many, alternative="greater", method="asymptotic").pvalue
    assert p == pytest.approx(exact_p, abs=0.03)
