"""`gmint eval`: metrics of a MINT classifier on a store's held-out rows, with baseline and gap."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from gmint.assess.evaluate import evaluate_store, evaluate_with_control
from gmint.assess.exposure import contact_sheet, exposed_members, write_csv
from gmint.assess.report import print_result, write_report
from gmint.assess.slices import SLICERS, add_to_report, evaluate_slices, parse_slicers, slice_rows, slices_table
from gmint.errors import InputError
from gmint.mint import TrainedMint
from gmint.reference.compare import Comparison, compare_attacks
from gmint.reference.manifest import ReferenceSet
from gmint.reference.report import comparison_table, write_comparison
from gmint.reference.signals import load_signals
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.inputs import load_data
from gmint_cli.options import DEFAULT_ATTACKS, choices, data_root_option, flag
from gmint_cli.outputs import check_output


@cli_errors
def evaluate(mint: Path = typer.Argument(..., help="A MINT classifier from `gmint train`."),
             store: Path = typer.Argument(..., help="A complete feature store with held-out rows."),
             report: Path = typer.Option(None, help="Folder for report.json/.md, scores.csv, ROC plots "
                                                    "(default: no report)."),
             negative_control: Path = typer.Option(None, help="Store extracted from a negative-control model "
                                                   "(`gmint audited train --negative-control`) on the same split: "
                                                   "the same recipe is fitted and scored on it (default: none)."),
             overwrite: bool = flag("--overwrite", "Write into an existing, non-empty --report folder."),
             json_out: bool = flag("--json", "Print the result (and the report's files) as JSON instead."),
             n_boot: int = typer.Option(1000, min=1, help="Bootstrap replicates for the 95% intervals."),
             seed: int = typer.Option(0, help="Seed of the bootstrap and of balancing the held-out rows."),
             slices: str = typer.Option(None, help=f"Also report every metric per slice: {choices(SLICERS)}, "
                                                   "comma-separated (default: none)."),
             top: int = typer.Option(None, min=1, help="Write the K held-out members with the highest scores to "
                                                       "exposed.csv and an image sheet exposed.png in --report "
                                                       "(default: none)."),
             data_root: Path = data_root_option("Folder holding the store's dataset, for --top's images "
                                                "(default: $GMINT_DATA; digits needs none)."),
             references: Path = typer.Option(None, help="A reference folder of the same audited model (`gmint "
                                                        "reference extract`): also run LiRA, RMIA and calibrated "
                                                        "gMINT with all its models (default: none).")
             ) -> None:
    """Evaluate a MINT classifier on held-out rows: accuracy, AUC, TPR at low FPR, with 95% intervals."""
    check_output(report, "--report", folder=True, overwrite=overwrite,
                 inputs={"the classifier": mint, "the store": store, "--negative-control": negative_control,
                         "--references": references})
    if top is not None and report is None:
        raise InputError("--top writes exposed.csv and exposed.png into the --report folder; give --report DIR")
    slicers = parse_slicers(slices) if slices is not None else []
    classifier = TrainedMint.load(mint)
    result = (evaluate_with_control(classifier, store, negative_control, n_boot=n_boot, seed=seed)
              if negative_control else evaluate_store(classifier, store, n_boot=n_boot, seed=seed))
    written = write_report(result, report) if report else []
    sliced = evaluate_slices(slice_rows(result, store), slicers, n_boot=n_boot, seed=seed) if slicers else []
    if sliced and report:
        add_to_report(sliced, report)
    comparison = side_by_side(references, classifier, n_boot=n_boot, seed=seed) if references else None
    if comparison is not None and report:
        written += write_comparison(comparison, report / "references", title=f"{references}")
    exposed = exposed_members(result, store, top) if top else []
    if exposed and report:
        images = load_data(str(result.protocol.get("dataset")), data_root)
        written += [write_csv(exposed, report / "exposed.csv"),
                    contact_sheet(exposed, images, report / "exposed.png",
                                  title=f"the {len(exposed)} held-out members with the highest MINT scores")]
    if json_out:
        extra: dict[str, object] = {"slices": [r.to_dict() for r in sliced]} if slicers else {}
        extra.update({"exposed": [asdict(r) for r in exposed]} if top else {})
        extra.update({"references": comparison.to_dict()} if comparison is not None else {})
        print_json({**result.to_dict(), **extra, **({"report_files": list(map(str, written))} if report else {})})
        return
    print_result(result, console)
    if sliced:
        console.print(slices_table(sliced))
    if comparison is not None:
        console.print(comparison_table(comparison, title=f"membership attacks side by side ({references})"))
    for r in exposed:
        console.print(f"exposed #{r.rank}: row {r.sample_id} (class {r.label}) score {r.score:.4f}, loss {r.loss:.3g}",
                      highlight=False)
    for path in written:
        console.print(f"wrote {path}")


def side_by_side(references: Path, classifier: TrainedMint, *, n_boot: int, seed: int) -> Comparison:
    """`gmint reference attack`'s comparison with every model of the set, for the classifier's audited model.

    Raises:
        InputError: the reference folder was made for another audited model.
    """
    manifest = ReferenceSet.load(references)
    if manifest.audited_fingerprint != classifier.spec.model_fingerprint:
        raise InputError(f"{references} holds reference models of another audited model than the classifier's")
    attacks = [a for a in DEFAULT_ATTACKS if manifest.mode == "offline" or "offline" not in a]
    if manifest.mode == "online":
        attacks += ["lira-online", "lira-online-global", "rmia-online"]
    signals = load_signals(references, k=manifest.k, gradient=True)
    return compare_attacks(signals, attacks, [manifest.k], n_boot=n_boot, seed=seed)
