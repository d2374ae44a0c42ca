"""`gmint audit`: the whole audit of one model from one configuration, resumable, into one report.

The configuration (`gmint.audit.config`) names the model, the data and the membership lists; this module
turns it into an experiment cell (`gmint.experiment.run_cell`: split, models, stores, classifiers, evaluations,
each reused where a run of the same settings finished it), scores the candidates if any, and writes the report
(`gmint.audit.report`). Run again on the same folder it resumes; its figures are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gmint.assess.candidates import in_model_classes, load_image_folder
from gmint.assess.scoring import Audit, audit_set
from gmint.audit.config import AuditConfig, resolve
from gmint.data.base import ImageSet
from gmint.data.readers import load_dataset
from gmint.data.split import MembershipSplit, read_item_list, split_from_lists
from gmint.errors import InputError
from gmint.experiment import Cell, Probe, Recipe, run_cell
from gmint.features.settings import ExtractSettings
from gmint.mint import TrainedMint
from gmint.models.io import AuditedModel, load_audited
from gmint.models.train import TrainConfig

CONFIG_COPY = "audit.toml"
# The paper's own MINT classifier: an MLP on MEAN Weight Modifiers.
PAPER_KIND = "mlp"


@dataclass(frozen=True)
class AuditRun:
    """What an audit measured: the cell (split, models, evaluations), the candidates' set test if any, and the
    probes by the name the report gives them."""

    config: AuditConfig
    cell: Cell
    labels: dict[str, Probe]
    candidates: Audit | None
    data: ImageSet


def main_signal(config: AuditConfig) -> str:
    """The name of the audit's reference signal: gMINT on the widest (last) layer setup, which scores candidates."""
    return f"gMINT {config.features.setups[-1]}"


def probes(config: AuditConfig, *, control: bool) -> dict[str, Probe]:
    """The probes an audit measures, by the name its report gives them: gMINT per layer setup, the paper's form
    on the widest setup, activation-MINT and the negative control on the extracted layers."""
    fraction = config.mint.fraction
    named = {f"gMINT {setup}": Probe("gMINT", setup, fraction) for setup in config.features.setups}
    last = config.features.setups[-1]
    if config.mint.paper_form and config.mint.kind != PAPER_KIND:
        named[f"{main_signal(config)} (the paper's MLP)"] = Probe("gMINT", last, fraction, kind=PAPER_KIND)
    if config.features.activation:  # the original MINT, in its own form: an MLP on the activations
        named[f"activation-MINT {last}"] = Probe("activation-MINT", last, fraction, kind=PAPER_KIND)
    if control:
        named[f"negative control (gMINT {last})"] = Probe("negative control", last, fraction)
    return named


def run_audit(config: AuditConfig, base: Path, out: Path, *, config_text: str, overwrite: bool = False,
              show_progress: bool = False, on_step: Callable[[str], None] | None = None) -> AuditRun:
    """Run the audit `config` describes (paths relative to `base`) in the folder `out`.

    Args:
        config: the audit.
        base: the folder the configuration's relative paths are read from.
        out: the audit's folder (created; a run of the same configuration there is resumed).
        config_text: the configuration's text, copied into the folder as the record of what was run; a folder
            holding another configuration's audit, or other files, is refused unless `overwrite`.
        overwrite: write into a folder holding other files or another configuration's audit (what it holds
            from a run of the same settings is reused, the rest replaced).
        show_progress: progress bars for training, extraction and scoring.
        on_step: called with a line as each stage starts.

    Raises:
        InputError: an inconsistent configuration (lists without a folder dataset, a control model without a
            model, candidates without a class-labelled folder ...) or inputs the stages refuse.
    """
    step = on_step or (lambda line: None)
    copy = out / CONFIG_COPY
    if not overwrite and out.is_dir() and any(out.iterdir()) and not copy.is_file():
        raise InputError(f"{out} holds other files than an audit's; choose an empty or new folder")
    if not overwrite and copy.is_file() and copy.read_text(encoding="utf-8") != config_text:
        raise InputError(f"{out} holds an audit of another configuration ({copy} differs); choose another folder")
    root = resolve(base, config.data.root)
    data = load_dataset(config.data.dataset, root)
    audited = _model(config, base, "file")
    split = _split(config, base, data)  # on the folder's own reading, as `gmint split` draws it
    if audited is not None:
        data = in_model_classes(data, audited)
    control = _model(config, base, "control_file")
    if control is not None and audited is None:
        raise InputError("a negative-control model is given without the audited model it controls for")
    models = {"audited": audited, **({"control": control} if control is not None else {})} if audited else None
    trains_control = audited is None and (len(split.control) > 0 if split is not None else config.split.control > 0)
    has_control = control is not None or trains_control
    named = probes(config, control=has_control)
    recipe = Recipe(arch=config.model.arch, probes=tuple(named.values()),
                    train=TrainConfig(epochs=config.model.epochs, batch_size=config.model.batch_size,
                                      lr=config.model.lr, seed=config.seed),
                    members=config.split.members, external=config.split.external, control=config.split.control,
                    holdout=config.split.holdout, protocol=config.split.protocol, seed=config.seed,
                    extraction=ExtractSettings(layer_setup=config.features.layers,
                                               reduction=config.features.reduction, engine=config.features.engine,
                                               batch_size=config.features.batch_size), kind=config.mint.kind,
                    n_boot=config.n_boot, mint_seeds=config.mint.seeds, device=config.device)
    # Written once every input has loaded: a configuration whose data or model cannot be read leaves no folder
    # behind that a corrected one would then be refused.
    out.mkdir(parents=True, exist_ok=True)
    copy.write_text(config_text, encoding="utf-8")
    step("split, models, stores and classifiers")
    cell = run_cell(data, recipe, out, split=split, models=models, trained_outside=config.model.trained_outside,
                    show_progress=show_progress)
    candidates = None
    if config.candidates.images:
        step("candidates")
        candidates = _candidates(config, base, cell, named, out, show_progress)
    return AuditRun(config, cell, named, candidates, data)


def _model(config: AuditConfig, base: Path, key: str) -> AuditedModel | None:
    path = resolve(base, getattr(config.model, key))
    return None if path is None else load_audited(path)


def _split(config: AuditConfig, base: Path, data: ImageSet) -> MembershipSplit | None:
    """The split the configuration names (a file, or the auditor's lists); None where it is drawn."""
    section = config.split
    given = resolve(base, section.file)
    if given is not None:
        if section.members_list or section.external_list:
            raise InputError("the split is given twice: a split file and membership lists; keep one")
        return MembershipSplit.load(given)
    members, external = resolve(base, section.members_list), resolve(base, section.external_list)
    if members is None and external is None:
        if config.model.file:
            raise InputError("a model from a file needs its membership: a split file or the lists of members and "
                             "externals")
        return None
    if members is None or external is None:
        raise InputError("membership lists come in pairs: the members' list and the externals' list")
    control = resolve(base, section.control_list)
    return split_from_lists(data, read_item_list(members), read_item_list(external),
                            control=read_item_list(control) if control is not None else None,
                            holdout=section.holdout, protocol=section.protocol, seed=config.seed)


def _candidates(config: AuditConfig, base: Path, cell: Cell, named: dict[str, Probe], out: Path,
                show_progress: bool) -> Audit:
    """The candidates scored by the last setup's gMINT classifier, tested against its held-out externals."""
    folder = resolve(base, config.candidates.images)
    assert folder is not None
    audited = cell.models["audited"]
    probe = named[main_signal(config)]
    measurement = next(m for m in cell.measurements if m.probe == probe)
    mint = TrainedMint.load(measurement.mint)
    images = load_image_folder(folder, audited, labels=config.candidates.labels)
    scored = out / "candidates.h5"
    if scored.exists():  # a finished audit's candidates are scored again, from scratch: their store is theirs
        scored.unlink()
    return audit_set(audited, mint, images, calibration=measurement.evaluation.store, out=scored,
                     labels=config.candidates.labels, device=config.device, show_progress=show_progress)
