"""`gmint audited train`: train a zoo architecture on a split's members, for experiments."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gmint.data.split import MembershipSplit, make_split
from gmint.data.transforms import Transform
from gmint.models.train import TrainConfig, train_audited
from gmint_cli.common import cli_errors, console, load_data, show_progress

app = typer.Typer(no_args_is_help=True)


@app.command("train")
@cli_errors
def train(arch: str = typer.Option("small_cnn", help="Architecture from the zoo."),
          data: str = typer.Option("digits", help="Dataset name."),
          data_root: Path = typer.Option(None, envvar="GMINT_DATA", help="Folder holding the datasets."),
          split: Path = typer.Option(None, help="Split manifest; default: a new grouped split, seed --seed."),
          width: float = typer.Option(1.0, help="Channel width multiplier."),
          arch_options: str = typer.Option("{}", help='Extra architecture options as JSON, e.g. {"depth": 4}.'),
          image_size: int = typer.Option(None, help="Resize images to this side (default: as stored)."),
          epochs: int = typer.Option(30), batch_size: int = typer.Option(64),
          optimizer: str = typer.Option("adam", help="adam | sgd"), lr: float = typer.Option(1e-3),
          weight_decay: float = typer.Option(0.0), schedule: str = typer.Option("constant", help="constant | cosine"),
          augment: str = typer.Option("none", help="none | crop | flip-crop"),
          seed: int = typer.Option(0), device: str = typer.Option("cpu"),
          resume: bool = typer.Option(False, help="Continue from the checkpoint at --out."),
          negative_control: bool = typer.Option(False, help="Train on the split's control rows (saw neither "
                                                "members nor externals): audits of it must give chance."),
          out: Path = typer.Option(Path("audited.pt"), help="Checkpoint (written every epoch).")) -> None:
    """Train an audited model on the members of a membership split; checkpoint every epoch."""
    images = load_data(data, data_root)
    manifest = MembershipSplit.load(split) if split else make_split(images, seed=seed)
    options = {"width": width, **json.loads(arch_options)}
    model = train_audited(images, manifest, arch=arch, transform=Transform(size=image_size),
                          config=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                                             weight_decay=weight_decay, schedule=schedule, augment=augment,
                                             seed=seed),
                          out=out, arch_options=options, resume=resume, negative_control=negative_control,
                          device=device,
                          show_progress=show_progress())
    rec = model.meta["record"]
    console.print(f"{out}: {arch} on {data}, {model.meta['epochs_done']} epochs in {model.meta['train_seconds']} s")
    console.print("  " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()))
