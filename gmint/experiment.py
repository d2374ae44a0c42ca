"""One audit cell as a function: split → audited and control models → feature stores → MINT classifiers →
evaluations, every one fitted on the auditor's pool and scored on the same held-out rows.

The demo runs one cell on digits; the benchmark grid runs one per dataset × architecture. A cell lives in
its own folder and resumes there: a finished model or store of the same recipe is reused as it is (each
refuses one of another recipe), so a killed run continues where it stopped and a finished one is re-read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from gmint.assess.evaluate import Evaluation, evaluate_store
from gmint.assess.metrics import SeedSpread, seed_spread
from gmint.data.base import ImageSet
from gmint.data.split import FRACTIONS, MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.mint import DEFAULT_KIND, train_mint
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig, train_audited


class Signal(NamedTuple):
    """Where a signal's features come from: which model's store, which source, and its classifiers' file tag."""

    model: str    # "audited" or "control"
    source: str   # a name in gmint.features.sources.SOURCES
    tag: str


SIGNALS = {"gMINT": Signal("audited", "gradient", ""),
           "activation-MINT": Signal("audited", "activation", "activation"),
           "negative control": Signal("control", "gradient", "control")}


@dataclass(frozen=True)
class Probe:
    """One MINT classifier of a cell: a signal, the layer setup it reads, the fraction of the pool it fits on,
    and its classifier kind where it is not the recipe's (the paper's MLP beside gmint's default, say)."""

    signal: str
    setup: str
    fraction: str = "D100"
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise InputError(f"unknown signal '{self.signal}'; choose from {list(SIGNALS)}")
        if self.fraction not in FRACTIONS:
            raise InputError(f"unknown data fraction '{self.fraction}'; choose from {list(FRACTIONS)}")

    @property
    def model(self) -> str:
        """'audited' or 'control': the model whose store the probe reads."""
        return SIGNALS[self.signal].model

    @property
    def source(self) -> str:
        """What the probe's features are: gradient, activation or output."""
        return SIGNALS[self.signal].source

    @property
    def mint_file(self) -> str:
        """The classifier's file name: mint-combined.pt, mint-activation-combined.pt, mint-entry-D10.pt,
        mint-combined-mlp.pt (a kind of its own), ..."""
        parts = ("mint", SIGNALS[self.signal].tag, self.setup, "" if self.fraction == "D100" else self.fraction,
                 self.kind or "")
        return "-".join(p for p in parts if p) + ".pt"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a cell's figures besides its data: the split, the models, the features, the
    classifiers and the probes. One seed drives the split, the extraction, the classifiers and the bootstrap;
    training has its own in `train`.

    `extraction` says how every store of the cell is extracted; each store's source is its probes' own, and its
    seed and device are the recipe's (`store_settings`), so the one seed and the one device hold for the cell.
    """

    arch: str
    train: TrainConfig
    probes: tuple[Probe, ...]
    members: float | int = 0.5
    external: float | int = 0.5
    control: float | int = 0
    holdout: float = 0.5
    protocol: str = "grouped"
    seed: int = 0
    image_size: int | None = None
    arch_options: Mapping[str, object] = field(default_factory=dict)
    extraction: ExtractSettings = ExtractSettings()
    kind: str = DEFAULT_KIND
    n_boot: int = 1000
    # Classifiers fitted per probe, with seeds seed, seed + 1, ...: the spread over them is uncertainty the
    # row bootstrap (which holds the classifier fixed) does not see. The first is the probe's measurement.
    mint_seeds: int = 1
    device: str = "cpu"  # where the models train and the stores are extracted ("cuda" for a GPU)

    def __post_init__(self) -> None:
        if self.mint_seeds < 1:
            raise InputError(f"mint_seeds must be at least 1, got {self.mint_seeds}")

    def store_settings(self, source: str) -> ExtractSettings:
        """How the cell's store of `source` features is extracted: the recipe's extraction, with its seed and
        device."""
        return replace(self.extraction, source=source, seed=self.seed, device=self.device)


@dataclass(frozen=True)
class Measurement:
    """One probe's evaluation, where its classifier is saved, how many pool rows fitted it, the seconds
    its fits and evaluations took, and each classifier seed's point metrics on the same held-out rows
    (the first is `evaluation`'s)."""

    probe: Probe
    evaluation: Evaluation
    mint: Path
    fit_rows: int
    seconds: float
    seed_metrics: tuple[dict[str, float | None], ...] = ()

    def over_seeds(self, metric: str) -> SeedSpread:
        """A metric's median over the classifier seeds with its range: the figure to report, not seed 0's."""
        return seed_spread([m[metric] for m in self.seed_metrics] or [self.evaluation.mint[metric].value])


@dataclass(frozen=True)
class Cell:
    """A cell's split, its models by role ('audited', 'control': those its probes read) and its measurements
    in the recipe's order."""

    workdir: Path
    split: MembershipSplit
    models: dict[str, AuditedModel]
    measurements: tuple[Measurement, ...] = ()

    def evaluation(self, probe: Probe) -> Evaluation:
        """The evaluation of `probe`.

        Raises:
            InputError: the cell did not measure it.
        """
        for m in self.measurements:
            if m.probe == probe:
                return m.evaluation
        raise InputError(f"the cell has no measurement of {probe}")


def run_cell(data: ImageSet, recipe: Recipe, workdir: Path, *, split: MembershipSplit | None = None,
             models: Mapping[str, AuditedModel] | None = None, trained_outside: bool = False,
             on_measurement: Callable[[Cell], None] | None = None, show_progress: bool = False) -> Cell:
    """Build and measure one audit cell in `workdir`, reusing what a run of the same recipe finished there.

    The split is drawn from the recipe (or given) and saved as split.json; the audited model (and the
    control model, if a probe reads it) are trained into audited.pt and control.pt (or given); each store
    (`<model>-<source>.h5`) is extracted when a probe first needs it; each probe's classifier is fitted, saved as
    its `mint_file` and evaluated on the store's held-out rows.

    Args:
        data: the dataset the split is drawn from.
        recipe: how the cell is built and what it measures.
        workdir: the cell's folder (created if needed).
        split: the membership split, where the auditor has one (their own lists); None: drawn from the recipe.
        models: the models by role ('audited', and 'control' where a probe reads it), where the auditor has them;
            None: trained from the recipe on the split.
        trained_outside: the given models were trained outside gmint: their split is the auditor's, not one they
            record (see `gmint.data.split.check_model_split`).
        on_measurement: called with the cell so far after each probe (its last measurement the new one),
            e.g. to write results before the next probe starts.
        show_progress: progress bars for training and extraction.

    Raises:
        InputError: a model in `workdir` was trained with another recipe; given models lack a role a probe reads.
        StoreMismatchError: a store in `workdir` was extracted with other settings.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if split is None:
        split = make_split(data, members=recipe.members, external=recipe.external, control=recipe.control,
                           holdout=recipe.holdout, protocol=recipe.protocol, seed=recipe.seed)
    split.save(workdir / "split.json")
    roles = [role for role in ("audited", "control") if any(p.model == role for p in recipe.probes)]
    if models is None:
        models = {role: train_audited(data, split, arch=recipe.arch, transform=Transform(size=recipe.image_size),
                                      config=recipe.train, out=workdir / f"{role}.pt",
                                      arch_options=dict(recipe.arch_options), resume=True,
                                      trained_on="control" if role == "control" else "members",
                                      device=recipe.device,
                                      show_progress=show_progress)
                  for role in roles}
    missing = [role for role in roles if role not in models]
    if missing:
        raise InputError(f"the recipe reads the {missing[0]} model, and none is given")
    rows = split_rows(split)
    stores: dict[tuple[str, str], Path] = {}
    cell = Cell(workdir, split, dict(models))
    for probe in recipe.probes:
        key = (probe.model, probe.source)
        if key not in stores:
            stores[key] = extract(models[probe.model], data, rows, recipe.store_settings(probe.source),
                                  out=workdir / f"{probe.model}-{probe.source}.h5", split=split, resume=True,
                                  trained_outside=trained_outside, show_progress=show_progress)
        t0 = time.perf_counter()
        kind = probe.kind or recipe.kind
        mint = train_mint(stores[key], kind=kind, setup=probe.setup, fraction=probe.fraction, seed=recipe.seed)
        mint.save(workdir / probe.mint_file)
        evaluation = evaluate_store(mint, stores[key], n_boot=recipe.n_boot, seed=recipe.seed)
        spread = [_points(evaluation)]
        for seed in range(recipe.seed + 1, recipe.seed + recipe.mint_seeds):
            other = train_mint(stores[key], kind=kind, setup=probe.setup, fraction=probe.fraction, seed=seed)
            # the same held-out rows (balanced with the recipe's seed): only the classifier's seed differs
            spread.append(_points(evaluate_store(other, stores[key], n_boot=1, seed=recipe.seed)))
        measured = Measurement(probe, evaluation, workdir / probe.mint_file, len(mint.fitted_ids),
                               round(time.perf_counter() - t0, 2), tuple(spread))
        cell = replace(cell, measurements=(*cell.measurements, measured))
        if on_measurement is not None:
            on_measurement(cell)
    return cell


def _points(evaluation: Evaluation) -> dict[str, float | None]:
    """The MINT classifier's point metrics (None where the held-out rows cannot resolve one)."""
    return {name: est.value for name, est in evaluation.mint.items()}
