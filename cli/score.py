"""`gmint score`: membership scores of candidate samples and a set-level verdict with a p-value."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import typer

from gmint.assess.candidates import LABEL_SOURCES, load_image_folder, model_input, subsample
from gmint.assess.exposure import contact_sheet, exposed_candidates, write_csv
from gmint.assess.scoring import audit_set, write_scores
from gmint.assess.selection import ROW_SELECTIONS, audit_split, select_rows
from gmint.data.split import MembershipSplit
from gmint.errors import InputError
from gmint.mint import TrainedMint
from gmint_cli.console import cli_errors, console, print_json, show_progress
from gmint_cli.inputs import (
    ARCH_HELP,
    MODEL_HELP,
    TORCHSCRIPT_HELP,
    TRUST_PICKLE_HELP,
    load_data,
    load_model,
    size_hint,
)
from gmint_cli.options import choices, data_root_option, device_option, flag
from gmint_cli.outputs import check_output
from gmint_cli.verdict import ROWS_HELP, print_set_verdict


@cli_errors
def score(model: Path = typer.Option(..., help=MODEL_HELP),
          arch: str = typer.Option(None, help=ARCH_HELP),
          torchscript: bool = flag("--torchscript", TORCHSCRIPT_HELP),
          trust_pickle: bool = flag("--trust-pickle", TRUST_PICKLE_HELP),
          mint: Path = typer.Option(..., help="A MINT classifier from `gmint train`."),
          store: Path = typer.Option(..., help="Calibration: the classifier's feature store; its held-out "
                                               "external rows (never fitted) are the reference scores."),
          images: Path = typer.Option(None, help="Candidates: a folder of <class>/ folders of images, each "
                                                 "named by a class name or index (default: none; or give --data)."),
          data: str = typer.Option(None, help="Candidates from a dataset, with --rows (default: none; or give "
                                               "--images)."),
          data_root: Path = data_root_option(),
          rows: str = typer.Option(None, help=ROWS_HELP),
          split: Path = typer.Option(None, help="Split manifest for --rows (default: the one stored with the "
                                                "model)."),
          model_trained_outside_gmint: bool = flag(
              "--model-trained-outside-gmint",
              "The model was trained outside gmint: accept a --split other than the one its checkpoint records."),
          sample: int = typer.Option(None, min=1, help="Audit a seeded random subset of this many candidates "
                                                       "(default: all of them)."),
          seed: int = typer.Option(0, help="Seed of --sample."),
          to_grey: bool = flag("--to-grey", "Convert colour candidates to grey for a greyscale model."),
          labels: str = typer.Option("true", help=f"{choices(LABEL_SOURCES)}: the label of each candidate's "
                                                  "Weight Modifier. true: its class (folder or dataset); predicted: "
                                                  "images with no class folder (loose in --images) get the audited "
                                                  "model's own prediction, and the outputs say so."),
          alpha: float = typer.Option(0.05, help="Significance level of the verdict, in (0, 1)."),
          out: Path = typer.Option(Path("scores.csv"), help="Per-sample scores: CSV (sample_id, file, label, "
                                                           "class, label_source, score), or JSON with the verdict "
                                                           "if it ends in .json."),
          features: Path = typer.Option(None, help="Keep the candidates' feature store here, a new file "
                                                   "(default: not kept)."),
          overwrite: bool = flag("--overwrite", "Replace an existing --out."),
          json_out: bool = flag("--json", "Print the result as JSON instead."),
          batch_size: int = typer.Option(128, min=1, help="Candidates per batch."),
          device: str = device_option(),
          top: int = typer.Option(None, min=1, help="Also write the K candidates with the highest scores to "
                                                    "<--out stem>-top.csv and an image sheet <--out stem>-top.png "
                                                    "(default: none).")) -> None:
    """Score candidate samples and test "these samples were not in training" as a set."""
    if (images is None) == (data is None):
        raise InputError("give the candidates with either --images FOLDER or --data NAME --rows ...")
    if data is not None and rows is None:
        raise InputError("--data needs --rows (holdout-members, holdout-external or a JSON file of row ids)")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"--alpha must be in (0, 1), got {alpha}")
    if labels not in LABEL_SOURCES:
        raise InputError(f"--labels must be {' or '.join(LABEL_SOURCES)}, got {labels!r}")
    read = {"--model": model, "--mint": mint, "--store": store, "--split": split,
            "--rows": Path(rows) if rows and rows not in ROW_SELECTIONS else None}
    if features is not None and features.resolve() == out.resolve():
        raise InputError(f"--out and --features are both {out}; give them different files")
    check_output(out, "--out", inputs=read, overwrite=overwrite)
    check_output(features, "--features", inputs=read, replaceable=False)
    top_files = [out.with_name(f"{out.stem}-top.csv"), out.with_name(f"{out.stem}-top.png")] if top else []
    for path in top_files:
        check_output(path, "--top", inputs=read, overwrite=overwrite)
    classifier = TrainedMint.load(mint)
    audited = load_model(model, arch, torchscript, trust_pickle)
    if images is not None:
        with size_hint(None):
            candidates, source = load_image_folder(images, audited, labels=labels), str(images)
        index = np.arange(len(candidates))
    else:
        manifest = audit_split(audited, MembershipSplit.load(split) if split else None,
                               trained_outside=model_trained_outside_gmint)
        candidates = load_data(data, data_root, size=model_input(audited)[1])
        source = f"{data} --rows {rows}"
        index = select_rows(rows, manifest, candidates, named="--rows")
    if sample is not None:
        index = subsample(index, sample, seed)
    with tempfile.TemporaryDirectory(prefix="gmint-score-") as tmp:
        kept = features or (Path(tmp) / "candidates.h5" if top else None)  # --top reads the losses there
        result = audit_set(audited, classifier, candidates, index, calibration=store, out=kept, to_grey=to_grey,
                           labels=labels, batch_size=batch_size, device=device, show_progress=show_progress())
        exposed = exposed_candidates(result.scores, kept, top) if top and kept else []
    write_scores(result, out, alpha=alpha)
    if exposed:
        write_csv(exposed, top_files[0])
        contact_sheet(exposed, candidates, top_files[1],
                      title=f"the {len(exposed)} candidates with the highest MINT scores")
    cal = result.calibration
    if json_out:
        print_json({"candidates": source, "calibration_store": str(store), "calibration_excluded": cal.excluded,
                    "calibration_misclassified": cal.misclassified, "label_source": labels,
                    "predicted_labels": result.scores.n_predicted, "verdict": result.verdict_dict(alpha),
                    "out": str(out),
                    **({"top": [asdict(r) for r in exposed], "top_files": list(map(str, top_files))} if top else {})})
        return
    print_set_verdict(result, source, f"of {store} (never used to fit the classifier", "score", alpha)
    console.print(f"wrote {out}")
    for path in top_files:
        console.print(f"wrote {path}")
