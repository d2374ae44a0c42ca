"""`gmint audited train`: train a zoo architecture on a split's members, for experiments."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.data.base import DATASETS
from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.models.augment import AUGMENTATIONS
from gmint.models.train import OPTIMIZERS, SCHEDULES, TrainConfig, train_audited
from gmint.models.zoo import ARCHITECTURES
from gmint_cli.console import OWN_CHECKPOINTS, cli_errors, console, remedies, show_progress
from gmint_cli.inputs import load_data
from gmint_cli.options import choices, data_root_option, device_option, flag, json_object, positive
from gmint_cli.outputs import check_output

app = typer.Typer(no_args_is_help=True)


@app.command("train")
@cli_errors
def train(arch: str = typer.Option("small_cnn", help=f"Architecture from the zoo: {choices(ARCHITECTURES)}."),
          data: str = typer.Option("digits", help=f"Dataset: {choices(DATASETS)}."),
          data_root: Path = data_root_option(),
          split: Path = typer.Option(None, help="Split manifest (default: a new grouped split, seed --seed)."),
          width: float = typer.Option(1.0, callback=positive, help="Channel width multiplier (> 0)."),
          arch_options: str = typer.Option("{}", help='Extra architecture options as a JSON object, e.g. '
                                                      '{"depth": 4}.'),
          image_size: int = typer.Option(None, min=1, help="Resize images to this side (default: as stored)."),
          epochs: int = typer.Option(30, min=1, help="Training epochs (the cap, with --target-accuracy)."),
          target_accuracy: float = typer.Option(None, min=0.0, max=1.0, help="Stop at the first epoch whose model "
                                                "classifies this fraction of its training rows correctly (default: "
                                                "train all --epochs)."),
          batch_size: int = typer.Option(64, min=1, help="Training batch size."),
          optimizer: str = typer.Option("adam", help=choices(OPTIMIZERS)),
          lr: float = typer.Option(1e-3, callback=positive, help="Learning rate (> 0)."),
          weight_decay: float = typer.Option(0.0, min=0.0, help="L2 weight decay."),
          schedule: str = typer.Option("constant", help=choices(SCHEDULES)),
          augment: str = typer.Option("none", help=choices(AUGMENTATIONS)),
          seed: int = typer.Option(0, help="Seed of the initialisation, the shuffling and a new split."),
          threads: int = typer.Option(1, min=1, help="CPU threads for training; the weights depend on it, so it "
                                                     "is recorded."),
          device: str = device_option(),
          resume: bool = flag("--resume", "Continue from the checkpoint at --out."),
          overwrite: bool = flag("--overwrite", "Replace an existing --out (kept until the new model is trained)."),
          negative_control: bool = flag("--negative-control", "Train on the split's control rows (saw neither "
                                                              "members nor externals): audits of it must give chance."),
          out: Path = typer.Option(Path("audited.pt"), help="Checkpoint (written every epoch).")) -> None:
    """Train an audited model on the members of a membership split; checkpoint every epoch."""
    check_output(out, "--out", inputs={"--split": split}, overwrite=overwrite, resume=resume)
    options = {"width": width, **json_object(arch_options, "--arch-options")}
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         weight_decay=weight_decay, schedule=schedule, augment=augment, seed=seed, threads=threads,
                         target_accuracy=target_accuracy)
    images = load_data(data, data_root, size=image_size, size_option="--image-size")
    manifest = MembershipSplit.load(split) if split else make_split(images, seed=seed)
    # With --overwrite the old model stays at --out until the new one is finished: a failed run keeps it.
    with remedies(OWN_CHECKPOINTS):
        model = train_audited(images, manifest, arch=arch, transform=Transform(size=image_size), config=config,
                              out=out, arch_options=options, resume=resume, overwrite=overwrite,
                              trained_on="control" if negative_control else "members", device=device,
                              show_progress=show_progress())
    record = model.record
    console.print(f"{out}: {arch} on {data}, {record.epochs_done} epochs in {record.train_seconds} s")
    if record.training is not None:  # accuracy and loss on members, externals (and test): always written
        console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in record.training.to_dict().items()))
