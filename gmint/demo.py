"""The whole audit on scikit-learn's bundled digits, offline: the walking example of every stage."""

from __future__ import annotations

from pathlib import Path

from gmint.data.base import DATASETS
from gmint.experiment import Cell, Probe, Recipe, run_cell
from gmint.models.train import TrainConfig

# What the demo measures, by the name it prints: gMINT per layer setup, then activation-MINT and the
# negative control on the combined layers.
PROBES = {**{f"gMINT {setup}": Probe("gMINT", setup) for setup in ("entry", "middle", "output", "combined")},
          "activation-MINT combined": Probe("activation-MINT", "combined"),
          "negative control (gMINT combined)": Probe("negative control", "combined")}


def run_demo(workdir: Path, *, seed: int = 0, epochs: int = 40, show_progress: bool = True) -> Cell:
    """Audit a small CNN trained on 40% of digits, with every comparison a reader needs.

    Steps: a seeded split (40% members, 40% external, 20% for a negative control); the audited CNN on
    the members and a control CNN on the control rows; MEAN Weight Modifiers of the combined layers;
    a gmint MINT classifier per layer setup fitted on the auditor's pool; activation-MINT and the
    loss threshold on the same rows; the same gMINT pipeline on the control model (must be chance).
    Run again in the same folder, it reuses the finished models and stores as they are (resuming a finished
    run writes nothing to them) and prints the same figures; so does any other machine, whatever its core count.

    Args:
        workdir: the demo's folder.
        seed: seeds the split, the training, the extraction, the classifiers and the bootstrap.
        epochs: training epochs of both CNNs.
        show_progress: progress bars for training and extraction.

    Returns:
        The cell; `PROBES` names its measurements.
    """
    recipe = Recipe(arch="small_cnn", train=TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed),
                    probes=tuple(PROBES.values()), members=0.4, external=0.4, control=0.2, holdout=0.5, seed=seed,
                    engine="auto")
    return run_cell(DATASETS.get("digits")(), recipe, workdir, show_progress=show_progress)
