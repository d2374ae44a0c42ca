"""Layer depth: how much membership each block of the audited model gives away, from its activations and from
its Weight Modifiers, beside the loss threshold.

The object-classification MINT work found activations most telling at the penultimate layer; gMINT reads
Weight Modifiers of entry, middle and output layers. A sweep answers both for the model at hand: for every
block (`gmint.features.layers.model_blocks`) a MINT classifier is fitted on the block's activation maps
(average-pooled to a stated size) and another on the MEAN Weight Modifiers of the block's weight layers, each
on the auditor's pool and scored on the same held-out rows as the loss threshold.

Two stores serve every depth (one forward pass for all activation maps, one extraction for all Weight
Modifiers), both resumable; each finished point is appended to `depth.jsonl` in the work folder and skipped
when the sweep runs again, so a killed sweep continues where it stopped. A point is one line, written whole
with its newline: a last line without one is what a kill in the middle of that write leaves, and is dropped
(the point is fitted again); any other line that does not read is damage, and refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gmint.assess.evaluate import evaluate_store
from gmint.assess.figures import pyplot, save_png
from gmint.assess.metrics import Estimate, chance_level
from gmint.assess.report import METRIC_LABELS
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.features.extract import extract, split_rows
from gmint.features.layers import resolve_modules, weight_layers
from gmint.features.settings import ExtractSettings
from gmint.features.sources import module_output_name
from gmint.mint import MINT_MODELS, train_mint
from gmint.models.io import AuditedModel

DEPTH_SOURCES = ("activation", "gradient")
RESULTS = "depth.jsonl"
DEPTH_METRICS = ("auc", "tpr_at_1pct_fpr")  # the figure's panels, left to right


@dataclass(frozen=True)
class DepthPoint:
    """One MINT classifier at one depth: the block, the source it read, its features and held-out metrics."""

    depth: int
    block: str
    source: str                      # activation | gradient
    kind: str
    features: list[str]
    width: int
    mint: dict[str, Estimate]
    loss_threshold: dict[str, Estimate]

    def to_dict(self) -> dict[str, object]:
        """One line of depth.jsonl."""
        return {"depth": self.depth, "block": self.block, "source": self.source, "kind": self.kind,
                "features": self.features, "width": self.width,
                "mint": {k: v.to_dict() for k, v in self.mint.items()},
                "loss_threshold": {k: v.to_dict() for k, v in self.loss_threshold.items()}}

    @classmethod
    def from_dict(cls, row: dict[str, object]) -> DepthPoint:
        """The point a depth.jsonl line records."""
        def metrics(d: object) -> dict[str, Estimate]:
            return {k: Estimate.from_dict(v) for k, v in dict(d).items()}  # type: ignore[call-overload]

        return cls(int(row["depth"]), str(row["block"]), str(row["source"]), str(row["kind"]),  # type: ignore[call-overload]
                   [str(f) for f in row["features"]], int(row["width"]),  # type: ignore[attr-defined, call-overload]
                   metrics(row["mint"]), metrics(row["loss_threshold"]))


@dataclass(frozen=True)
class DepthSweep:
    """Every point of a sweep, in depth order, and the blocks it walked."""

    blocks: list[str]
    points: list[DepthPoint] = field(default_factory=list)

    def series(self, source: str, kind: str) -> list[DepthPoint]:
        """The points of one source and classifier kind, by depth."""
        return sorted((p for p in self.points if p.source == source and p.kind == kind), key=lambda p: p.depth)

    @property
    def loss_threshold(self) -> dict[str, Estimate]:
        """The loss threshold's metrics on the sweep's held-out rows (the same for every point)."""
        if not self.points:
            raise InputError("the sweep has no points yet")
        return self.points[0].loss_threshold


def block_parameters(model: torch.nn.Module, block: str, example: torch.Tensor) -> list[str]:
    """The weight-layer weights inside `block` (what its Weight Modifiers are taken of); [] for a block
    without any (a ReLU, a pooling)."""
    return [p for p in weight_layers(model, example) if p.startswith(block + ".")]


def sweep_depth(audited: AuditedModel, data: ImageSet, split: MembershipSplit, workdir: Path, *,
                blocks: str | Sequence[str] = "blocks", pool: str = "pool:4x4",
                extraction: ExtractSettings = ExtractSettings(), kinds: Sequence[str] = ("mlp",),
                sources: Sequence[str] = DEPTH_SOURCES, n_boot: int = 200,
                on_point: Callable[[DepthPoint], None] | None = None, show_progress: bool = False) -> DepthSweep:
    """Fit and evaluate a MINT classifier per block, source and classifier kind; resume what `workdir` holds.

    Args:
        audited: the audited model.
        data: its dataset.
        split: its membership split (pool rows fit the classifiers, held-out rows score them).
        workdir: where the stores (`activation-maps.h5`, `gradient.h5`) and `depth.jsonl` go.
        blocks: a module setup (default: every block), see `gmint.features.layers.resolve_modules`.
        pool: the activation maps' reduction (`pool:<h>x<w>` bounds storage; `flat` keeps whole maps).
        extraction: how the stores are extracted: its transform (None: the audited model's own), engine, batch
            size and device; its seed also seeds the classifiers, the balancing of held-out rows and the bootstrap,
            so one seed drives the sweep. Its layer setup, reduction and source are the sweep's own per store.
        kinds: MINT classifier kinds fitted at each point (`mlp`; `map_cnn` reads activation maps only); a kind
            followed by `+label` is fitted label-aware (the one-hot true class as an input), e.g. `mlp+label`.
        sources: `activation`, `gradient` or both.
        n_boot: bootstrap replicates of each interval.
        on_point: called with each new point once it is written.
        show_progress: progress bars for the extractions.

    Raises:
        InputError: an unknown source, or a depth.jsonl from another sweep in `workdir`.
    """
    unknown = [s for s in sources if s not in DEPTH_SOURCES]
    if unknown:
        raise InputError(f"unknown depth source '{unknown[0]}'; choose from {list(DEPTH_SOURCES)}")
    fits = {kind: parse_kind(kind) for kind in kinds}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = audited.module.eval()
    transform, seed = extraction.transform or audited.transform, extraction.seed
    rows = split_rows(split)
    example = transform(data.images[rows.index[:1]])
    chosen = resolve_modules(model, blocks, example)
    done = {(p.block, p.source, p.kind) for p in read_points(workdir)}  # a damaged file is refused before any write
    _check_sweep(workdir, audited.fingerprint, pool, chosen)
    _drop_torn_line(workdir / RESULTS)  # the next point must start a line of its own
    def store(name: str, layers: list[str], source: str, reduction: str) -> Path:
        settings = replace(extraction, layer_setup=tuple(layers), source=source, reduction=reduction,
                           transform=transform)
        return extract(audited, data, rows, settings, out=workdir / name, split=split, resume=True,
                       show_progress=show_progress)

    stores: dict[str, Path] = {}
    if "activation" in sources:
        stores["activation"] = store("activation-maps.h5", chosen, "activation-maps", pool)
    parameters = {b: block_parameters(model, b, example) for b in chosen}
    if "gradient" in sources and any(parameters.values()):
        stores["gradient"] = store("gradient.h5", [p for b in chosen for p in parameters[b]], "gradient", "mean")
    for depth, block in enumerate(chosen):
        for source in sources:
            features = [module_output_name(block)] if source == "activation" else parameters[block]
            for kind in kinds:
                base, options = fits[kind]
                if not features or (block, source, kind) in done or (base == "map_cnn" and source != "activation"):
                    continue
                mint = train_mint(stores[source], kind=base, setup=",".join(features), seed=seed, options=options)
                result = evaluate_store(mint, stores[source], n_boot=n_boot, seed=seed)
                point = DepthPoint(depth, block, source, kind, features, sum(mint.spec.dims), result.mint,
                                   result.loss_threshold)
                with open(workdir / RESULTS, "a") as fh:
                    fh.write(json.dumps(point.to_dict()) + "\n")
                if on_point is not None:
                    on_point(point)
    return DepthSweep(chosen, sorted(read_points(workdir), key=lambda p: (p.depth, p.source, p.kind)))


def parse_kind(kind: str) -> tuple[str, dict[str, object]]:
    """`mlp` → ("mlp", {}); `mlp+label` → ("mlp", {"label_aware": True}).

    Raises:
        InputError: a suffix other than `+label`, or an unknown classifier kind.
    """
    base, plus, tag = kind.partition("+")
    if plus and tag != "label":
        raise InputError(f"classifier '{kind}': the only suffix is '+label' (label-aware), e.g. 'mlp+label'")
    MINT_MODELS.get(base)
    return base, ({"label_aware": True} if plus else {})


def _check_sweep(workdir: Path, fingerprint: str, pool: str, blocks: list[str]) -> None:
    """Refuse a work folder that holds another sweep (another model, pooling or blocks): its points would mix."""
    record = workdir / "sweep.json"
    mine = {"model_fingerprint": fingerprint, "pool": pool, "blocks": blocks}
    if record.exists():
        theirs = json.loads(record.read_text())
        diff = [k for k in mine if theirs.get(k) != mine[k]]
        if diff:
            raise InputError(f"{workdir} holds a sweep with another {', '.join(diff)}; use a new work folder")
    else:
        record.write_text(json.dumps(mine, indent=2))


def read_points(workdir: Path) -> list[DepthPoint]:
    """The points a sweep finished in `workdir` (none when it has not started), without a last line that a
    kill tore (see the module docstring).

    Raises:
        InputError: a whole line that is not a depth point (the file was damaged or edited).
    """
    path = Path(workdir) / RESULTS
    if not path.exists():
        return []
    *lines, _torn = path.read_text().split("\n")  # after the last newline: "" or a line cut short
    points = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            points.append(DepthPoint.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            raise InputError(f"{path}: line {number} is not a depth point ({exc.__class__.__name__}: {exc}); "
                             "delete that line to fit its point again, or use a new work folder") from None
    return points


def _drop_torn_line(path: Path) -> None:
    """Cut a last line without its newline off the file, so that appends start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(whole)


def plot_depth(sweep: DepthSweep, path: Path, *, title: str = "") -> Path:
    """AUC and TPR @ 1% FPR against depth, one line per source and kind (95% intervals as bands), the loss
    threshold dashed and chance dotted on both panels; written as a PNG.

    Chance is where a score blind to membership lands (`chance_level`): AUC 0.5, and at a fixed FPR a TPR equal
    to that FPR, so a block's line near 1% on the right panel finds members no better than a coin. Both
    panels share one legend, in a narrow panel of its own, so that it covers no line.
    """
    width = max(8.0, 0.45 * len(sweep.blocks) + 4)
    fig, (*panels, key) = pyplot().subplots(1, 3, figsize=(width + 2.5, 4.2),
                                            gridspec_kw={"width_ratios": [1, 1, 0.45]})
    series = sorted({(p.source, p.kind) for p in sweep.points})
    for ax, metric in zip(panels, DEPTH_METRICS, strict=True):
        for colour, (source, kind) in enumerate(series):
            points = [p for p in sweep.series(source, kind) if p.mint[metric].value is not None]
            x = [p.depth for p in points]
            ax.plot(x, [p.mint[metric].value for p in points], marker="o", color=f"C{colour}",
                    label=f"{source} MINT ({kind})")
            ax.fill_between(x, [p.mint[metric].low for p in points], [p.mint[metric].high for p in points],
                            color=f"C{colour}", alpha=0.15)
        baseline = sweep.loss_threshold[metric] if sweep.points else None
        if baseline is not None and baseline.value is not None:
            ax.axhline(baseline.value, color="black", linestyle="--", label="loss threshold")
        ax.axhline(chance_level(metric), color="grey", linestyle=":", label="chance (AUC 0.5; TPR = FPR)")
        ax.set_ylabel(f"{METRIC_LABELS[metric]} on held-out rows")
        ax.set_xticks(range(len(sweep.blocks)))
        ax.set_xticklabels(sweep.blocks, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("block (input → output)")
    entries = {label: handle for ax in panels for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    key.legend(entries.values(), entries.keys(), loc="center left", fontsize=7, frameon=False)
    key.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
