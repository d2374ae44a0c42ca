"""Reference models' design: which rows each trains on, and the recipe all of them are trained with.

A sample's signal under the audited model says little on its own: a hard sample has a high loss whether it
was trained on or not. Difficulty calibration (LiRA, Carlini et al. 2022; RMIA, Zarifzadeh et al. 2024)
compares it with the same sample's signal under reference models whose training data is known: K more models
trained with the audited model's recipe, on data the auditor controls.

- **offline** (the auditor's realistic case): the pool is the split's `control` rows, a population disjoint
  from the candidates (members and externals); no reference model ever trains on a candidate.
- **online** (an upper bound, for experiments): the pool is control ∪ candidates, so each candidate is in
  about half of the reference models.

Halves come in complementary pairs (model 2j trains on a random half of the pool, model 2j+1 on the rest), so
any even prefix of the set includes each pool row in exactly half of its models: K ∈ {2, 4, 8} are prefixes of
one set of 8, and each is balanced. Where the data has groups (GTSRB tracks) whole groups are drawn, so no
reference model sees part of a track. The models start from the audited model's initial weights
(`init="audited"`: the same seed, hence the same initialisation, as per-filter Weight Modifiers of independently
initialised networks are not aligned) or each from its own seed (`init="fresh"`).

The recipe is the audited checkpoint's own where gmint trained it. A model from outside (`gmint model import`)
records how it is built and fed but not how it was trained, nor on which rows: the auditor gives the
TrainConfig and the split of their own lists, and the reference models are its described architecture (its
factory and arguments, its preprocessing, its output) trained with that recipe. The recipe and the split given
are recorded in the manifest (a resume with another is refused) and in each reference checkpoint, which also
records the description, so the reference models load and are read exactly as the audited model is. With
`init="audited"` they then share the recipe's seed, which need not be the audited model's own initialisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.models.description import ModelDescription
from gmint.models.io import AuditedModel
from gmint.models.train import TrainConfig
from gmint.models.zoo import ARCHITECTURES
from gmint.reference.manifest import INITS, MODES, ReferenceSet

# Recorded by train_audited in arch_args from the data and transform, not chosen by the recipe's options.
_DERIVED_ARCH_ARGS = ("in_channels", "num_classes", "image_size")


@dataclass(frozen=True)
class ReferenceDraw:
    """How a reference set is drawn: which pool, how many halves, from which seed, and how each model starts.

    One value for the four choices the manifest records (ReferenceSet's `mode`, `k`, `seed`, `init`), so the
    set asked for is checked once, before any model is read or trained, and a resume compares like with like.

    Attributes:
        mode: `offline` (pool = the split's control rows) or `online` (pool = control ∪ candidates).
        k: number of reference models.
        seed: seeds the halves.
        init: `audited` (every model starts from the audited model's seed) or `fresh` (each from its own).

    Raises:
        InputError: an unknown mode or init, or fewer than one model.
    """

    mode: str = "offline"
    k: int = 4
    seed: int = 0
    init: str = "audited"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown reference mode '{self.mode}'; choose from {list(MODES)}")
        if self.k < 1:
            raise InputError(f"the number of reference models must be at least 1, got {self.k}")
        if self.init not in INITS:
            raise InputError(f"unknown reference init '{self.init}'; choose from {list(INITS)}")


def paired_halves(units: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(k, len(units)) bool: complementary pairs of random halves over the units' distinct values.

    Model 2j takes a random half of the distinct units (rows, or groups of rows), model 2j+1 the other half; an
    odd last model takes a half of its own. Pairs are drawn one after another from one seeded generator, so the
    design for k is the first k rows of the design for any larger k.
    """
    if k < 1:
        raise InputError(f"the number of reference models must be at least 1, got {k}")
    distinct = np.unique(units)
    if len(distinct) < 2:
        raise InputError(f"the reference pool has {len(distinct)} distinct rows or groups; halves need at least 2")
    rng = np.random.default_rng(seed)
    design = np.zeros((k, len(units)), bool)
    for pair in range(0, k, 2):
        half = rng.permutation(distinct)[: len(distinct) // 2]
        taken = np.isin(units, half)
        design[pair] = taken
        if pair + 1 < k:
            design[pair + 1] = ~taken
    return design


def reference_pool(split: MembershipSplit, mode: str) -> np.ndarray:
    """The rows reference models draw their halves from: control rows (offline), control ∪ candidates (online).

    Raises:
        InputError: an unknown mode, or a split without control rows.
    """
    if mode not in MODES:
        raise InputError(f"unknown reference mode '{mode}'; choose from {list(MODES)}")
    if not split.control:
        raise InputError("the split has no control (population) rows for reference models to train on",
                         Remedy.CONTROL_ROWS)
    rows = split.control if mode == "offline" else split.control + split.members + split.external
    return np.unique(np.asarray(rows, np.int64))


def candidate_rows(split: MembershipSplit) -> np.ndarray:
    """The rows whose membership is audited: members and externals of the split, sorted."""
    return np.unique(np.asarray(split.members + split.external, np.int64))


@dataclass(frozen=True)
class ReferenceRecipe:
    """How every reference model of one audited model is trained, but for its rows and seed.

    Attributes:
        config: the TrainConfig (the audited checkpoint's, or the one given for a model from outside).
        split: the audited model's membership split: its control rows are the offline pool.
        arch: a zoo architecture (a model gmint trained), else None.
        transform: the zoo architecture's preprocessing (a described model's is in its description).
        arch_options: the zoo architecture's options, those train_audited derives from the data left out.
        description: how a model from outside is built, fed and read (its reference models are built so), else
            None.
        given: the config and split were given by the auditor (a model from outside), not read from the model.
    """

    config: TrainConfig
    split: MembershipSplit
    arch: str | None = None
    transform: Transform | None = None
    arch_options: dict[str, object] | None = None
    description: ModelDescription | None = None
    given: bool = False


def records_recipe(audited: AuditedModel) -> bool:
    """Whether the audited checkpoint records the recipe it was trained with (gmint trained it)."""
    return audited.record.train_config is not None


def reference_recipe(audited: AuditedModel, audited_path: Path, *, config: TrainConfig | None = None,
                     split: MembershipSplit | None = None) -> ReferenceRecipe:
    """The recipe reference models of `audited` are trained with: a gmint checkpoint's own, or for a model from
    outside its description with the TrainConfig and split the auditor gives.

    A model gmint trained is refused a `config` (its reference models are trained as it was, not as stated) and
    any `split` but its own.

    Raises:
        InputError: a config for a model that records its own, another split than its own; for a model from
            outside no config or no split, or code that cannot be built afresh (a TorchScript file, a pickled
            module); a checkpoint that records neither a recipe nor a description.
    """
    record = audited.record
    if record.train_config is not None:
        own, recorded, arch = record.split, record.description, record.arch
        if own is None or recorded is None or arch is None:
            missing = [key for key, found in (("arch", arch), ("transform", recorded), ("split", own)) if found is None]
            raise InputError(f"{audited_path} records an incomplete training recipe ({', '.join(missing)} missing)")
        if config is not None:
            raise InputError(f"{audited_path} records the recipe it was trained with, which its reference models "
                             "are trained with: give no other")
        if split is not None and split.sha256 != own.sha256:
            raise InputError(f"the split {split.sha256[:12]} is not the one {audited_path} was trained on "
                             f"({own.sha256[:12]}): its reference models are drawn from its own")
        return ReferenceRecipe(config=TrainConfig(**record.train_config), split=own, transform=recorded.transform,
                               arch=arch, arch_options={k: v for k, v in record.arch_args.items()
                                                        if k not in _DERIVED_ARCH_ARGS})
    description = audited.description
    if description is None:
        raise InputError(f"{audited_path} records no training recipe and no description of how it is built; "
                         "reference models need at least the model's code and preprocessing")
    if ":" not in description.arch and description.arch not in ARCHITECTURES:
        raise InputError(f"{audited_path} is a {description.arch} model without the code that builds it, so no "
                         "reference model can be trained like it; import it with its architecture")
    if config is None:
        raise InputError(f"{audited_path} was trained outside gmint and records no training recipe: give the one "
                         "its reference models are trained with (epochs, learning rate, optimiser, ...)")
    if split is None:
        raise InputError(f"{audited_path} was trained outside gmint and records no membership split: give the "
                         "split of its members and externals, with control rows for the reference models")
    return ReferenceRecipe(config=config, split=split, description=description, given=True)


def design_references(audited: AuditedModel, audited_path: Path, data: ImageSet, draw: ReferenceDraw, *,
                      config: TrainConfig | None = None, split: MembershipSplit | None = None) -> ReferenceSet:
    """The manifest of K reference models for an audited gmint checkpoint (nothing is trained).

    Args:
        audited: the audited checkpoint.
        audited_path: where it is (recorded).
        data: the data the reference models train on (a model from outside's: labelled in its classes).
        draw: how the set is drawn (its mode, K, seed and init).
        config: the TrainConfig of a model from outside (see `reference_recipe`).
        split: the membership split of a model from outside (see `reference_recipe`).

    Raises:
        InputError: no recipe (see `reference_recipe`), another dataset, data in other classes than the
            model's, or an offline design that would train on a candidate.
    """
    recipe = reference_recipe(audited, audited_path, config=config, split=split)
    recorded = audited.record.dataset
    if recorded is not None and recorded != data.name:
        raise InputError(f"{audited_path} was trained on '{recorded}', the data is '{data.name}'")
    if recipe.split.dataset != data.name:
        raise InputError(f"the split is for '{recipe.split.dataset}', the data is '{data.name}'")
    audited.check_classes(data.classes)
    split = recipe.split
    pool = reference_pool(split, draw.mode)
    units = data.groups[pool] if data.groups is not None else pool
    inclusion = paired_halves(units, draw.k, draw.seed)
    manifest = ReferenceSet(mode=draw.mode, k=draw.k, seed=draw.seed, init=draw.init, audited=str(audited_path),
                            audited_fingerprint=audited.fingerprint, dataset=data.name,
                            split_sha256=split.sha256, pool=[int(r) for r in pool],
                            inclusion=inclusion.astype(int).tolist(),
                            grouped_by="group" if data.groups is not None else "row",
                            recipe=asdict(recipe.config) if recipe.given else None,
                            split=asdict(split) if recipe.given else None)
    check_offline(manifest, split)
    return manifest


def check_offline(manifest: ReferenceSet, split: MembershipSplit) -> None:
    """Refuse an offline set in which any reference model trains on a candidate, from the recorded inclusion.

    Raises:
        InputError: naming the model and how many candidates it would see.
    """
    if manifest.mode != "offline":
        return
    candidates = candidate_rows(split)
    for i in range(manifest.k):
        seen = np.intersect1d(manifest.rows_of(i), candidates)
        if len(seen):
            raise InputError(f"offline reference model {i} would train on {len(seen)} candidate rows (e.g. "
                             f"{int(seen[0])}); offline reference models see population rows only")
