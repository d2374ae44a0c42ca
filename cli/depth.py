"""`gmint depth`: MINT per block of the audited model, from activations and from Weight Modifiers, plotted."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gmint.assess.depth import DEPTH_SOURCES, parse_kind, plot_depth, sweep_depth
from gmint.assess.report import format_estimate
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.features.extract import split_rows
from gmint.features.layers import MODULE_PRESETS, resolve_modules
from gmint.features.settings import ExtractSettings
from gmint.mint import MINT_MODELS
from gmint_cli.console import cli_errors, console, print_json, show_progress
from gmint_cli.inputs import (
    ARCH_HELP,
    MODEL_HELP,
    TORCHSCRIPT_HELP,
    TRUST_PICKLE_HELP,
    check_model_input,
    load_data,
    load_model,
    model_transform,
)
from gmint_cli.options import choices, data_root_option, flag
from gmint_cli.outputs import check_output


@cli_errors
def depth(model: Path = typer.Option(..., help=MODEL_HELP),
          arch: str = typer.Option(None, help=ARCH_HELP),
          torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
          trust_pickle: bool = flag("--trust-pickle", TRUST_PICKLE_HELP),
          data: str = typer.Option(None, help="Dataset (default: the one the model was trained on)."),
          data_root: Path = data_root_option(),
          split: Path = typer.Option(None, help="Split manifest (default: the one stored with the model)."),
          blocks: str = typer.Option("blocks", help=f"Modules to sweep: {choices(MODULE_PRESETS)}, or module "
                                                    "names/globs, comma-separated (default: every block)."),
          pool: str = typer.Option("pool:4x4", help="How activation maps are stored: pool:<h>x<w> (average-pooled "
                                                    "to at most h x w) or flat."),
          kinds: str = typer.Option("mlp", help=f"MINT classifiers fitted at each depth, comma-separated: "
                                                f"{choices(MINT_MODELS)} (map_cnn for activations only); add "
                                                "+label for a label-aware one (mlp+label)."),
          sources: str = typer.Option(",".join(DEPTH_SOURCES), help=f"{choices(DEPTH_SOURCES)}, comma-separated."),
          work: Path = typer.Option(..., help="Work folder: the stores and depth.jsonl; a rerun resumes there."),
          out: Path = typer.Option(None, help="The plot (PNG; default: <work>/depth.png)."),
          list_blocks: bool = flag("--list", "List the modules the sweep would visit, and exit."),
          n_boot: int = typer.Option(200, min=1, help="Bootstrap replicates for the 95% intervals."),
          seed: int = typer.Option(0, help="Seed of the classifiers, the balancing and the bootstrap."),
          batch_size: int = typer.Option(128, min=1, help="Rows per extraction batch."),
          overwrite: bool = flag("--overwrite", "Replace an existing --out plot."),
          json_out: bool = flag("--json", "Print the sweep as JSON instead.")) -> None:
    """Sweep the model's blocks: activation and gradient MINT per depth beside the loss threshold, with a plot."""
    out = out or work / "depth.png"
    audited = load_model(model, arch, torchscript, trust_pickle)
    name = data or audited.record.dataset
    if not name:
        raise InputError("--data is required for a model without gmint metadata")
    images = load_data(str(name), data_root)
    manifest = MembershipSplit.of(audited.record.split, split)
    if manifest is None:
        raise InputError("--split is required for a model trained outside gmint")
    transform = model_transform(audited, None)
    check_model_input(images, audited, transform)
    example = transform(images.images[split_rows(manifest).index[:1]])
    chosen = resolve_modules(audited.module.eval(), blocks, example)
    if list_blocks:
        if json_out:
            print_json({"model": str(model), "blocks": chosen})
        else:
            for i, block in enumerate(chosen):
                console.print(f"{i:3d}  {block}", highlight=False)
        return
    check_output(out, "--out", inputs={"--model": model, "--split": split}, overwrite=overwrite)
    kind_names = [k.strip() for k in kinds.split(",") if k.strip()]
    for kind in kind_names:
        parse_kind(kind)
    source_names = [s.strip() for s in sources.split(",") if s.strip()]
    if "activation" not in source_names and all(parse_kind(k)[0] == "map_cnn" for k in kind_names):
        raise InputError("map_cnn fits activation maps only, and --sources has no activation: no classifier would "
                         "be fitted; add activation to --sources or choose another --kinds")
    extraction = ExtractSettings(transform=transform, seed=seed, batch_size=batch_size)
    sweep = sweep_depth(audited, images, manifest, work, blocks=chosen, pool=pool, extraction=extraction,
                        kinds=kind_names, sources=source_names, n_boot=n_boot, show_progress=show_progress())
    if not sweep.points:
        raise InputError(f"the sweep produced no point: none of the {len(chosen)} selected blocks has "
                         f"{' or '.join(f'{s} features' for s in source_names)} to fit on; see --list")
    plot_depth(sweep, out, title=f"{model.name}: MINT per block")
    if json_out:
        print_json({"blocks": sweep.blocks, "points": [p.to_dict() for p in sweep.points], "plot": str(out)})
        return
    series = sorted({(p.source, p.kind) for p in sweep.points})
    table = Table(title=f"MINT per block of {model} (held-out rows)")
    table.add_column("depth", justify="right")
    table.add_column("block")
    for source, kind in series:
        table.add_column(f"{source} ({kind}) AUC", justify="right")
        table.add_column(f"{source} ({kind}) TPR @ 1% FPR", justify="right")
    at = {(p.depth, p.source, p.kind): p for p in sweep.points}
    for d, block in enumerate(sweep.blocks):
        cells = []
        for source, kind in series:
            p = at.get((d, source, kind))
            cells += [format_estimate(p.mint["auc"]), format_estimate(p.mint["tpr_at_1pct_fpr"])] if p else ["—", "—"]
        table.add_row(str(d), block, *cells)
    console.print(table)
    base = sweep.loss_threshold
    console.print(f"loss threshold on the same rows: AUC {format_estimate(base['auc'])}, TPR @ 1% FPR "
                  f"{format_estimate(base['tpr_at_1pct_fpr'])}", highlight=False)
    console.print(f"wrote {out}")
