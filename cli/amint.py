"""`gmint amint train|score`: Active MINT — an audited model trained with its own MINT head, and its verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from gmint.amint import TAP_PRESETS, AmintConfig, TrainedHead, audit_with_head, evaluate_amint, train_amint
from gmint.amint import write_report as write_amint_report
from gmint.amint.train import HEAD_FILE, MODEL_FILE
from gmint.assess.candidates import load_image_folder, model_input, subsample
from gmint.assess.report import METRIC_LABELS, format_estimate
from gmint.assess.scoring import write_scores
from gmint.assess.selection import ROW_SELECTIONS, audit_split, select_rows
from gmint.data.base import DATASETS
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.errors import InputError, Remedy
from gmint.models.augment import AUGMENTATIONS
from gmint.models.io import load_audited
from gmint.models.train import OPTIMIZERS, SCHEDULES, TrainConfig
from gmint.models.zoo import ARCHITECTURES
from gmint_cli.console import OWN_CHECKPOINTS, cli_errors, console, print_json, remedies, show_progress
from gmint_cli.inputs import load_data, size_hint
from gmint_cli.options import (
    choices,
    data_root_option,
    device_option,
    flag,
    json_flag,
    json_object,
    overwrite_flag,
    positive,
)
from gmint_cli.outputs import check_output
from gmint_cli.verdict import ROWS_HELP, print_set_verdict

app = typer.Typer(no_args_is_help=True)
# Candidates without a class cannot be scored by the head: it reads each one's true class.
TRUE_CLASSES = {Remedy.PREDICTED_LABELS: "the aMINT head reads each candidate's true class"}


@app.command("train")
@cli_errors
def train(arch: str = typer.Option("small_cnn", help=f"Architecture from the zoo: {choices(ARCHITECTURES)}."),
          data: str = typer.Option("digits", help=f"Dataset: {choices(DATASETS)}."),
          data_root: Path = data_root_option(),
          split: Path = typer.Option(None, help="Split manifest (default: a new grouped split, seed --seed)."),
          taps: str = typer.Option(None, help="Modules the head reads, comma-separated (default: the "
                                              f"architecture's preset; presets for {choices(TAP_PRESETS)})."),
          width: float = typer.Option(1.0, callback=positive, help="Channel width multiplier (> 0)."),
          arch_options: str = typer.Option("{}", help='Extra architecture options as a JSON object, e.g. '
                                                      '{"depth": 4}.'),
          image_size: int = typer.Option(None, min=1, help="Resize images to this side (default: as stored)."),
          epochs: int = typer.Option(30, min=1, help="Training epochs (passes over the members)."),
          batch_size: int = typer.Option(64, min=1, help="Members per step (and as many externals beside them)."),
          optimizer: str = typer.Option("adam", help=choices(OPTIMIZERS)),
          lr: float = typer.Option(1e-3, callback=positive, help="Learning rate (> 0)."),
          weight_decay: float = typer.Option(0.0, min=0.0, help="L2 weight decay."),
          schedule: str = typer.Option("constant", help=choices(SCHEDULES)),
          augment: str = typer.Option("none", help=choices(AUGMENTATIONS)),
          task_weight: float = typer.Option(1.0, min=0.0, help="Weight of the task loss CE/CE₀."),
          mint_weight: float = typer.Option(1.0, min=0.0, help="Weight of the head's loss BCE/BCE₀."),
          head_channels: int = typer.Option(64, min=1, help="Width of each tap's branch in the head."),
          head_hidden: int = typer.Option(128, min=1, help="Width of the head's hidden FC layer."),
          seed: int = typer.Option(0, help="Seed of the initialisation, the shuffling, a new split and the report."),
          threads: int = typer.Option(1, min=1, help="CPU threads for training; the weights depend on it, so it "
                                                     "is recorded."),
          passive: bool = typer.Option(True, "--passive/--no-passive",
                                       help="Also run passive gMINT (combined layers, MEAN, MLP) on the model."),
          n_boot: int = typer.Option(1000, min=1, help="Bootstrap replicates of the 95% intervals."),
          device: str = device_option(),
          resume: bool = flag("--resume", "Continue the training checkpoint in --out."),
          overwrite: bool = flag("--overwrite", "Write into a non-empty --out (the old model is kept until the new "
                                                "one is trained)."),
          json_out: bool = flag("--json", "Print the report as JSON instead."),
          out: Path = typer.Option(Path("amint"), help=f"Output folder: {MODEL_FILE} (a gmint checkpoint), "
                                                       f"{HEAD_FILE}, report.json, report.md.")) -> None:
    """Train an audited model together with a MINT head on its activations, and report both readings."""
    check_output(out, "--out", inputs={"--split": split}, overwrite=overwrite, resume=resume, folder=True)
    options = {"width": width, **json_object(arch_options, "--arch-options")}
    config = AmintConfig(train=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                           weight_decay=weight_decay, schedule=schedule, augment=augment, seed=seed,
                                           threads=threads),
                         task_weight=task_weight, mint_weight=mint_weight, head_channels=head_channels,
                         head_hidden=head_hidden)
    images = load_data(data, data_root, size=image_size, size_option="--image-size")
    manifest = MembershipSplit.load(split) if split else make_split(images, seed=seed)
    transform = Transform(size=image_size)
    with remedies(OWN_CHECKPOINTS):
        result = train_amint(images, manifest, arch=arch, transform=transform, config=config, out=out,
                             arch_options=options, taps=taps, resume=resume, overwrite=overwrite, device=device,
                             show_progress=show_progress())
    report = evaluate_amint(result, images, manifest, transform=transform, passive=passive, overwrite=overwrite,
                            n_boot=n_boot, seed=seed, device=device, show_progress=show_progress())
    written = write_amint_report(report, out)
    if json_out:
        print_json(report.to_dict())
        return
    record = result.audited.record
    console.print(f"{out / MODEL_FILE}: {arch} on {data} with an aMINT head on {', '.join(result.head.spec.taps)}, "
                  f"{record.epochs_done} epochs in {record.train_seconds} s")
    table = Table(title=f"aMINT on {data} (negatives: {report.protocol['negatives']})")
    table.add_column("metric")
    columns = report.columns()
    for label in columns:
        table.add_column(label, justify="right")
    for key, label in METRIC_LABELS.items():
        table.add_row(label, *(format_estimate(m[key]) for m in columns.values()))
    console.print(table)
    for reading in report.readings:
        console.print(f"{reading.name}: {reading.members} members vs {reading.external} never-seen rows (balanced); "
                      f"mean P(member) {reading.mean_member_score:.3f} vs {reading.mean_external_score:.3f}")
    console.print("audited model accuracy: " + ", ".join(
        f"{k.removesuffix('_accuracy')} {v:.3f}" for k, v in report.audited_model.items() if k.endswith("_accuracy")))
    for warning in report.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in [out / MODEL_FILE, out / HEAD_FILE, *written])}")


@app.command("score")
@cli_errors
def score(model: Path = typer.Option(..., help=f"The aMINT-trained audited model ({MODEL_FILE} of `gmint amint "
                                               "train`)."),
          head: Path = typer.Option(..., help=f"Its head ({HEAD_FILE}); its held-out external scores calibrate the "
                                              "verdict."),
          images: Path = typer.Option(None, help="Candidates: a folder of <class name>/ folders of images "
                                                 "(default: none; or give --data)."),
          data: str = typer.Option(None, help="Candidates from a dataset, with --rows (default: none; or give "
                                               "--images)."),
          data_root: Path = data_root_option(),
          rows: str = typer.Option(None, help=ROWS_HELP),
          sample: int = typer.Option(None, min=1, help="Audit a seeded random subset of this many candidates "
                                                       "(default: all of them)."),
          seed: int = typer.Option(0, help="Seed of --sample."),
          to_grey: bool = flag("--to-grey", "Convert colour candidates to grey for a greyscale model."),
          alpha: float = typer.Option(0.05, help="Significance level of the verdict, in (0, 1)."),
          out: Path = typer.Option(Path("scores.csv"), help="Per-sample scores: CSV (sample_id, file, score), "
                                                           "or JSON with the verdict if it ends in .json."),
          overwrite: bool = overwrite_flag(),
          json_out: bool = json_flag(),
          batch_size: int = typer.Option(256, min=1, help="Candidates per batch."),
          device: str = device_option()) -> None:
    """Score candidate samples with an aMINT head and test "these samples were not in training" as a set."""
    if (images is None) == (data is None):
        raise InputError("give the candidates with either --images FOLDER or --data NAME --rows ...")
    if data is not None and rows is None:
        raise InputError("--data needs --rows (holdout-members, holdout-external or a JSON file of row ids)")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"--alpha must be in (0, 1), got {alpha}")
    read = {"--model": model, "--head": head, "--rows": Path(rows) if rows and rows not in ROW_SELECTIONS else None}
    check_output(out, "--out", inputs=read, overwrite=overwrite)
    trained = TrainedHead.load(head)
    audited = load_audited(model)
    if images is not None:
        with size_hint(None), remedies(TRUE_CLASSES):
            candidates, source = load_image_folder(images, audited), str(images)
        index = np.arange(len(candidates))
    else:
        candidates = load_data(data, data_root, size=model_input(audited)[1])
        source = f"{data} --rows {rows}"
        index = select_rows(rows, audit_split(audited), candidates, named="--rows")
    if sample is not None:
        index = subsample(index, sample, seed)
    result = audit_with_head(audited, trained, candidates, index, head_path=head, to_grey=to_grey,
                             batch_size=batch_size, device=device)
    write_scores(result, out, alpha=alpha)
    v, cal = result.verdict, result.calibration
    if json_out:
        print_json({"candidates": source, "calibration": str(head), "calibration_excluded": cal.excluded,
                    "verdict": v.to_dict(alpha), "out": str(out)})
        return
    print_set_verdict(result, source, f"scored by {head} (never used to train it", "P(member)", alpha)
    console.print(f"wrote {out}")
