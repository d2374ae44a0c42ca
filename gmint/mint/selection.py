"""The `gmint` classifier: every input gMINT carries, in a representation that keeps its scale, with the model
chosen by cross-validation inside the auditor's pool.

Its inputs are the Weight-Modifier features (per-layer log-norms beside signed-log columns, see
`representation.py`) and the per-row loss and correctness the store holds (`ROW_SIGNALS`): a classifier that
cannot read the loss can do worse than thresholding it, which is the floor any membership test should reach.
Which classifier reads them (logistic regression or a small MLP, their options, the transform) is chosen by
k-fold cross-validation on the pool rows it is fitted on: folds are stratified, and whole groups where rows
come in groups, so no held-out row ever informs the choice. The grid is small on purpose: it must run in
seconds on the digits demo, and a wider one would only fit the folds' noise on pools of a few hundred rows.

The floor is the loss threshold itself: a candidate that reads the loss alone, smaller meaning member, ranked in
float64 as the loss is, so it reads exactly what the loss threshold reads. Any other candidate (the loss with
correctness, or with the Weight Modifiers) replaces it only where it beats it on the same folds by more than one
standard error of the fold-by-fold difference (the one-standard-error rule, measured paired) and by at least
MIN_GAIN. On a pool of a few dozen rows the best fold mean is often a reader that only fitted the folds' noise,
and it then reads below the loss it was given on rows it never saw (a logistic regression on 20 rows learnt the
loss backwards); the standard error keeps the loss there. On a pool of a thousand rows the folds can agree so
closely that a reader nearly monotone in the loss passes that test by a gain no held-out set carries (CIFAR-10
ResNet-101 in the grid: +0.0002 on every fold, −0.0004 on the held-out rows); the minimum gain keeps the loss there.
Wherever the pool tells the candidates apart by more, the choice is the fold means'.
The choice, every candidate's fold AUCs and any refit are saved in the classifier file's record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, CollapsedFitError, MintClassifier, input_dtype, score_spread
from gmint.mint.representation import Representation, representation_width


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: the classifier kind that reads the representation, its options, the transform,
    and what it reads: every input, or only the row signals (where the Weight Modifiers add nothing the
    folds can see, the loss read alone is the honest floor)."""

    kind: str
    transform: str
    options: Mapping[str, object] = field(default_factory=dict)
    reads: str = "all"

    def __post_init__(self) -> None:
        if self.reads not in READS:
            raise InputError(f"a grid candidate reads one of {list(READS)}, got {self.reads!r}")

    @property
    def name(self) -> str:
        """'logreg c=0.1 signed_log': how records and reports name the candidate."""
        options = " ".join(f"{k}={v}" for k, v in self.options.items())
        reads = "" if self.reads == "all" else f"({self.reads} only)"
        return " ".join(p for p in (self.kind, options, self.transform, reads) if p)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (what a classifier file's config holds)."""
        return {"kind": self.kind, "transform": self.transform, "options": dict(self.options), "reads": self.reads}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Candidate:
        """The candidate a `to_dict` record describes.

        Raises:
            InputError: a record without a kind and a transform.
        """
        options = d.get("options", {})
        if not isinstance(d.get("kind"), str) or not isinstance(d.get("transform"), str) or \
                not isinstance(options, Mapping):
            raise InputError(f"a grid candidate needs a kind, a transform and options, got {dict(d)}")
        return cls(str(d["kind"]), str(d["transform"]), dict(options), str(d.get("reads", "all")))


# What a candidate reads: every input column, the row signals alone (the last columns), or the loss alone (the
# first of them).
READS = ("all", "signals", "loss")


# The loss threshold (the floor), regularisation strengths a decade apart for the linear reader (the log-norms
# make it strong on its own), one unbent linear reader to let the folds say whether the signed log helps, one on
# the row signals alone (where the Weight Modifiers only add noise on a small pool), and two small MLPs (width,
# weight decay and learning rate varied together) for signal a linear reader cannot combine.
LOSS_FLOOR = Candidate("threshold", "linear", {"direction": "smaller"}, reads="loss")
GRID = (LOSS_FLOOR, Candidate("logreg", "signed_log", {"c": 0.01}), Candidate("logreg", "signed_log", {"c": 0.1}),
        Candidate("logreg", "signed_log", {"c": 1.0}), Candidate("logreg", "linear", {"c": 0.1}),
        Candidate("logreg", "signed_log", {"c": 1.0}, reads="signals"),
        Candidate("mlp", "signed_log", {"hidden": [64], "weight_decay": 1e-3, "lr": 3e-3}),
        Candidate("mlp", "signed_log", {"hidden": [32], "weight_decay": 1e-2, "lr": 3e-3}))


@dataclass(frozen=True)
class CvScore:
    """A candidate's held-out AUC on each fold (empty where its fits collapsed)."""

    candidate: Candidate
    fold_auc: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean fold AUC; -inf for a candidate that could not be fitted, so it ranks last."""
        return float(np.mean(self.fold_auc)) if self.fold_auc else float("-inf")

    def to_dict(self) -> dict[str, object]:
        """The JSON form of the record."""
        fitted = bool(self.fold_auc)
        return {"candidate": self.candidate.name, "auc_mean": round(self.mean, 4) if fitted else None,
                "auc_std": round(float(np.std(self.fold_auc)), 4) if fitted else None,
                "fold_auc": [round(a, 4) for a in self.fold_auc]}


# The least mean fold gain in AUC for which another candidate replaces the loss: the third decimal the reports print.
MIN_GAIN = 0.001


def rule(min_gain: float) -> str:
    """The replacement rule in words, as the classifier's record states it."""
    return (f"the loss alone unless another candidate beats it on the folds by one paired standard error and by "
            f"at least {min_gain:g} AUC")


def ranked(scores: list[CvScore], min_gain: float = MIN_GAIN) -> list[CvScore]:
    """The order candidates are tried in: those that beat the loss-alone candidate beyond fold noise and by at
    least `min_gain` (`beats`), best fold mean first; then that candidate; then the rest, best fold mean first.
    Without such a candidate (a grid recorded without one, or one that could not be fitted), plain fold-mean order.
    Ties keep the grid's order."""
    by_mean = sorted(scores, key=lambda s: -s.mean)  # stable: the grid's earlier (simpler) candidate wins ties
    floor = next((s for s in scores if s.candidate.reads == "loss" and s.fold_auc), None)
    if floor is None:
        return by_mean
    ahead = [s for s in by_mean if s is not floor and beats(s, floor, min_gain)]
    return [*ahead, floor, *(s for s in by_mean if s is not floor and s not in ahead)]


def beats(score: CvScore, floor: CvScore, min_gain: float = MIN_GAIN) -> bool:
    """Whether `score` is ahead of `floor` on the same folds by more than one standard error of their fold-by-fold
    difference and, on the mean, by at least `min_gain`."""
    if len(score.fold_auc) != len(floor.fold_auc) or len(score.fold_auc) < 2:
        return False
    diff = np.subtract(score.fold_auc, floor.fold_auc)
    gain = diff.mean()
    return bool(gain > diff.std(ddof=1) / np.sqrt(len(diff)) and gain >= min_gain)


def folds_of(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The k stratified (train, held-out) index pairs of the pool rows; whole groups where `groups` is given.

    Raises:
        InputError: a side (or its groups) fewer than k.
    """
    units = y if groups is None else np.unique(np.stack([groups, y]), axis=1)[1]
    if min(int((units == 1).sum()), int((units == 0).sum())) < k:
        raise InputError(f"{k}-fold model selection needs at least {k} members and {k} externals "
                         f"({'groups' if groups is not None else 'rows'}) in the pool")
    if groups is None:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def _read(rep: Representation, model: MintClassifier, columns: np.ndarray) -> np.ndarray:
    """(n,) P(member) of a reader on raw columns, at the precision it takes them in (float64 for the loss
    threshold, whose ranking must be the loss's own) and returns them in."""
    return np.asarray(model.predict_proba(rep(columns, input_dtype(model))), np.float64)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


@MINT_MODELS.register("gmint")
class SelectedMint:
    """The representation of `representation.py` read by the grid's candidate of best pool cross-validation AUC.

    Options: `blocks` (each input block's width, filled in from the store), `folds`, `grid` (candidates as
    `Candidate.to_dict` records; GRID by default), `min_gain` (MIN_GAIN by default). `chosen` is the fitted
    candidate, recorded for loading.
    """

    row_signals = ("loss", "correct")
    standardised = False
    needs_blocks = True

    def __init__(self, input_dim: int, *, blocks: list[int] | None = None, folds: int = 4,
                 grid: list[dict[str, object]] | None = None, chosen: dict[str, object] | None = None,
                 min_gain: float = MIN_GAIN) -> None:
        self.blocks = tuple(int(b) for b in (blocks or [input_dim]))
        self.signals = len(self.row_signals)
        if sum(self.blocks) != input_dim:
            raise InputError(f"feature blocks of widths {list(self.blocks)} do not add up to {input_dim} columns")
        if folds < 2:
            raise InputError(f"model selection needs at least 2 folds, got {folds}")
        self.folds = folds
        if isinstance(min_gain, bool) or not isinstance(min_gain, int | float) or not 0.0 <= min_gain < 0.5:
            raise InputError(f"the minimum AUC gain over the loss is in [0, 0.5), got {min_gain}")
        self.min_gain = float(min_gain)
        self.grid = tuple(Candidate.from_dict(c) for c in grid) if grid is not None else GRID
        self.chosen = Candidate.from_dict(chosen) if chosen is not None else self.grid[0]
        self.representation: Representation | None = None
        self.model = self._reader(self.chosen)

    def _span(self, candidate: Candidate) -> slice:
        """Which input blocks the candidate reads: all, the row signals' (the last ones, one column each), or the
        loss's (the first of them)."""
        first = len(self.blocks) - self.signals
        return {"all": slice(0, len(self.blocks)), "signals": slice(first, len(self.blocks)),
                "loss": slice(first, first + 1)}[candidate.reads]

    def _blocks(self, candidate: Candidate) -> tuple[int, ...]:
        return self.blocks[self._span(candidate)]

    def _columns(self, candidate: Candidate, x: np.ndarray) -> np.ndarray:
        span, edges = self._span(candidate), np.cumsum((0, *self.blocks))
        return x[:, edges[span.start]:edges[span.stop]]

    def _reader(self, candidate: Candidate) -> MintClassifier:
        return MINT_MODELS.get(candidate.kind)(representation_width(self._blocks(candidate)), **candidate.options)

    def _fit_one(self, candidate: Candidate, x: np.ndarray, y: np.ndarray, seed: int,
                 groups: np.ndarray | None) -> tuple[Representation, MintClassifier, dict[str, object]]:
        x = self._columns(candidate, x)
        rep = Representation.fit(x, self._blocks(candidate), candidate.transform)
        model = self._reader(candidate)
        record = model.fit(rep(x, input_dtype(model)), y, seed=seed, groups=groups)
        return rep, model, record

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Cross-validate the grid on the pool, then fit the best candidate on every pool row.

        A final fit whose scores do not spread (`base.score_spread`) gives way to the next-best candidate
        (recorded in `refits`); CollapsedFitError where none spreads.
        """
        scores = []
        for candidate in self.grid:
            fold_auc: list[float] = []
            for train, held in folds_of(y, groups, self.folds, seed):
                try:
                    rep, model, _ = self._fit_one(candidate, x[train], y[train], seed,
                                                  None if groups is None else groups[train])
                except CollapsedFitError:
                    fold_auc = []
                    break
                fold_auc.append(_auc(y[held], _read(rep, model, self._columns(candidate, x[held]))))
            scores.append(CvScore(candidate, tuple(fold_auc)))
        refits: list[dict[str, object]] = []
        for score in ranked(scores, self.min_gain):
            if not score.fold_auc:
                continue
            try:
                rep, model, record = self._fit_one(score.candidate, x, y, seed, groups)
                columns = self._columns(score.candidate, x)
                problem = score_spread(_logit(_read(rep, model, columns)), columns)
            except CollapsedFitError as exc:
                problem = str(exc)
            if problem is None:
                self.chosen, self.representation, self.model = score.candidate, rep, model
                return {"chosen": score.candidate.name, "cv_auc": round(score.mean, 4),
                        "rule": rule(self.min_gain), "min_gain": self.min_gain, "folds": self.folds,
                        "fold_unit": "rows" if groups is None else "whole groups",
                        "cv": [s.to_dict() for s in scores], "refits": refits, "fit": record, "train_rows": len(y)}
            refits.append({"candidate": score.candidate.name, "scores": problem})
        raise CollapsedFitError(f"no candidate of the gmint classifier's grid scored the pool rows apart "
                                f"({len(refits)} tried, {len(scores) - len(refits)} collapsed in cross-validation)")

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) for raw inputs (features, then row signals)."""
        if self.representation is None:
            raise InputError("the gmint classifier has not been fitted")
        return _read(self.representation, self.model, self._columns(self.chosen, x))

    def state(self) -> dict[str, torch.Tensor]:
        """The representation's tensors (`representation/...`) and the chosen reader's (`reader/...`)."""
        if self.representation is None:
            raise InputError("the gmint classifier has not been fitted")
        return {**{f"representation/{k}": v for k, v in self.representation.state().items()},
                **{f"reader/{k}": v for k, v in self.model.state().items()}}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back the representation and the chosen reader."""
        parts: dict[str, dict[str, torch.Tensor]] = {"representation": {}, "reader": {}}
        for key, value in state.items():
            part, name = key.split("/", 1)
            parts[part][name] = value
        self.representation = Representation.from_state(self._blocks(self.chosen), self.chosen.transform,
                                                        parts["representation"])
        self.model.load_state(parts["reader"])

    def config(self) -> dict[str, object]:
        """Blocks, folds, the grid searched, the minimum gain over the loss and the candidate chosen."""
        return {"blocks": list(self.blocks), "folds": self.folds, "grid": [c.to_dict() for c in self.grid],
                "min_gain": self.min_gain, "chosen": self.chosen.to_dict()}
