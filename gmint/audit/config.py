"""The audit configuration: one TOML file that says everything one audit of one model needs.

Every field has a default and a line of documentation (`describe()` prints them, `gmint audit --describe`
shows them); an unknown section or key is refused, so a misspelt setting never silently falls back to its
default. Paths are read relative to the configuration file's folder, so a config travels with its files.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

from gmint.errors import InputError


def _doc(text: str, default: Any) -> Any:
    """A field with its default and its one line of documentation."""
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class DataSection:
    """Where the images are."""

    dataset: str = _doc("a dataset reader: digits (bundled), mnist, cifar10, gtsrb, tiny-imagenet, imagefolder",
                        "digits")
    root: str = _doc("the folder holding the dataset (empty: $GMINT_DATA; digits needs none)", "")


@dataclass(frozen=True)
class SplitSection:
    """Which images trained the model (members) and which did not (externals): from the auditor's lists, a
    split file, or drawn (for a model gmint trains)."""

    file: str = _doc("an existing split.json (`gmint split`); empty: from the lists below, else drawn", "")
    members_list: str = _doc("the auditor's list of the files that trained the model (one per line, or a CSV)", "")
    external_list: str = _doc("the list of files that did not train it", "")
    control_list: str = _doc("files for a negative-control model (optional)", "")
    members: float = _doc("drawn splits: the members' fraction of the train part (or a row count)", 0.4)
    external: float = _doc("drawn splits: the externals' fraction (or a row count)", 0.4)
    control: float = _doc("drawn splits: the control rows' fraction (0: no negative control)", 0.2)
    holdout: float = _doc("the share of each side held out from the MINT classifier's fit", 0.5)
    protocol: str = _doc("grouped (groups never straddle sides) or paper (the authors' layout)", "grouped")


@dataclass(frozen=True)
class ModelSection:
    """The audited model: a file (described once with `gmint model import`, or trained by gmint), or trained here
    on the split's members."""

    file: str = _doc("the audited model's file; empty: train one here on the members", "")
    control_file: str = _doc("a negative-control model (never saw the members); empty: trained here where the "
                             "split has control rows and the audited model is trained here", "")
    trained_outside: bool = _doc("the model was trained outside gmint on these lists (not on a gmint split)", False)
    arch: str = _doc("trained here: the architecture (small_cnn, resnet18, ...)", "small_cnn")
    epochs: int = _doc("trained here: epochs", 40)
    batch_size: int = _doc("trained here: batch size", 32)
    lr: float = _doc("trained here: learning rate", 1e-3)


@dataclass(frozen=True)
class FeaturesSection:
    """How the Weight Modifiers are extracted."""

    layers: str = _doc("the layers whose Weight Modifiers are extracted (a preset, names or globs)", "combined")
    setups: tuple[str, ...] = _doc("the layer setups a MINT classifier is fitted on, each compared",
                                   ("entry", "middle", "output", "combined"))
    reduction: str = _doc("how each layer's Weight Modifier is reduced (mean: gMINT's MEAN per output filter)",
                          "mean")
    engine: str = _doc("where the per-sample gradient engine search starts (auto: the fastest proven right)", "auto")
    batch_size: int = _doc("rows per extraction batch", 128)
    activation: bool = _doc("also fit activation-MINT on the same layers' activations", True)


@dataclass(frozen=True)
class MintSection:
    """The MINT classifiers."""

    kind: str = _doc("the classifier kind: gmint (per-layer log-norms, signed-log features, loss and correctness, "
                     "chosen by cross-validation on the pool), mlp (the paper's form), ...", "gmint")
    paper_form: bool = _doc("also fit the paper's form (MEAN features, MLP) on the widest setup, reported beside",
                            True)
    fraction: str = _doc("the share of the auditor's pool it is fitted on: D100, D10 or D1", "D100")
    seeds: int = _doc("classifiers fitted per setup with successive seeds; the spread is reported", 1)


@dataclass(frozen=True)
class CandidatesSection:
    """Images whose membership is in question: scored, and tested as a set against held-out externals."""

    images: str = _doc("a folder of images (class-named subfolders, or loose images); empty: none", "")
    labels: str = _doc("true (from class folders) or predicted (the audited model's own prediction)", "true")
    alpha: float = _doc("the set-level test's significance level", 0.05)


@dataclass(frozen=True)
class ReportSection:
    """What the report shows beyond the comparison."""

    title: str = _doc("the report's title", "Membership audit")
    top: int = _doc("how many of the most exposed held-out members are shown with their images", 12)
    slices: tuple[str, ...] = _doc("metrics per slice: class, correct (classified correctly or not), loss-decile",
                                   ("class",))


@dataclass(frozen=True)
class AuditConfig:
    """One audit of one model."""

    out: str = _doc("the audit's folder: its files, and report.html / report.json", "audit")
    seed: int = _doc("seeds every random choice: split, training, extraction, classifiers, bootstrap", 0)
    n_boot: int = _doc("bootstrap replicates of every 95% interval", 1000)
    device: str = _doc("where models run: cpu, cuda, cuda:N", "cpu")
    data: DataSection = field(default_factory=DataSection)
    split: SplitSection = field(default_factory=SplitSection)
    model: ModelSection = field(default_factory=ModelSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    mint: MintSection = field(default_factory=MintSection)
    candidates: CandidatesSection = field(default_factory=CandidatesSection)
    report: ReportSection = field(default_factory=ReportSection)

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise InputError(f"n_boot must be at least 1, got {self.n_boot}")
        if self.mint.seeds < 1:
            raise InputError(f"[mint] seeds must be at least 1, got {self.mint.seeds}")
        if self.report.top < 0:
            raise InputError(f"[report] top must be 0 or more, got {self.report.top}")
        if not 0 < self.candidates.alpha < 1:
            raise InputError(f"[candidates] alpha must lie in (0, 1), got {self.candidates.alpha}")
        if not self.features.setups:
            raise InputError("[features] setups must name at least one layer setup")
        _check_names(self)


def _check_names(config: AuditConfig) -> None:
    """Every name the configuration gives is one gmint knows, so a misspelt one fails before any work."""
    from gmint.assess.candidates import LABEL_SOURCES
    from gmint.assess.slices import SLICERS
    from gmint.data.base import DATASETS
    from gmint.data.readers import load_dataset  # noqa: F401  (registers the readers)
    from gmint.data.split import FRACTIONS, PROTOCOLS
    from gmint.features.settings import ExtractSettings
    from gmint.mint import MINT_MODELS
    from gmint.models.zoo import ARCHITECTURES

    DATASETS.get(config.data.dataset)
    ExtractSettings(layer_setup=config.features.layers, reduction=config.features.reduction,
                    engine=config.features.engine, batch_size=config.features.batch_size)
    MINT_MODELS.get(config.mint.kind)
    LABEL_SOURCES.get(config.candidates.labels)
    for slicer in config.report.slices:
        SLICERS.get(slicer)
    if not config.model.file:
        ARCHITECTURES.get(config.model.arch)
    if config.split.protocol not in PROTOCOLS:
        raise InputError(f"[split] protocol must be one of {list(PROTOCOLS)}, got '{config.split.protocol}'")
    if config.mint.fraction not in FRACTIONS:
        raise InputError(f"[mint] fraction must be one of {list(FRACTIONS)}, got '{config.mint.fraction}'")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """An instance of the dataclass `cls` from a TOML table, refusing unknown keys and values of the wrong type."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown setting '{unknown[0]}' in {where}; known: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        expected = hints[name]
        label = f"{where} {name}" if where != "the audit configuration" else name
        if isinstance(expected, type) and is_dataclass(expected):
            if not isinstance(value, dict):
                raise InputError(f"[{name}] must be a table of settings")
            kwargs[name] = _build(expected, value, f"[{name}]")
        else:
            kwargs[name] = _checked(value, expected, label)
    return cls(**kwargs)


def _checked(value: Any, expected: Any, label: str) -> Any:
    """`value` as the field's type: ints for floats allowed, a list of strings for a tuple of strings."""
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is str:
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise InputError(f"setting {label} must be {_type_name(expected)}, got {value!r}")
    return value


def _type_name(expected: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        expected, "a list of strings")


def load_config(path: Path) -> tuple[AuditConfig, Path]:
    """The configuration in the TOML file `path`, and the folder its relative paths are read from.

    Raises:
        InputError: a missing or unreadable file, TOML syntax, an unknown key, a value of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such configuration file")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a valid TOML file: {exc}") from None
    return _build(AuditConfig, values, "the audit configuration"), path.resolve().parent


def resolve(base: Path, value: str) -> Path | None:
    """A configured path, relative to the configuration's folder; None where the setting is empty."""
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def with_out(config: AuditConfig, out: str) -> AuditConfig:
    """The configuration with another output folder (the command line's choice over the file's)."""
    return replace(config, out=out)


def describe() -> str:
    """Every section and setting with its default and documentation, as a commented TOML file."""
    return render(AuditConfig(), documented=True)


def render(config: AuditConfig, *, documented: bool = False) -> str:
    """`config` as a TOML file `load_config` reads back to it (with each setting's documentation if asked)."""
    lines = ["# gmint audit configuration: every setting, its default and what it means."] if documented else []

    def table(section: Any, header: str | None) -> None:
        cls = type(section)
        if header:
            lines.extend(["", f"[{header}]"])
            if documented:
                lines.append(f"# {' '.join((cls.__doc__ or '').split())}")
        hints = get_type_hints(cls)
        for f in fields(cls):
            if not is_dataclass(hints[f.name]):
                note = f"  # {f.metadata['doc']}" if documented else ""
                lines.append(f"{f.name} = {_toml(getattr(section, f.name))}{note}")

    table(config, None)
    hints = get_type_hints(AuditConfig)
    for f in fields(AuditConfig):
        if is_dataclass(hints[f.name]):
            table(getattr(config, f.name), f.name)
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)
