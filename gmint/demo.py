"""The whole audit on scikit-learn's bundled digits, offline: the walking example of every stage."""

from __future__ import annotations

from pathlib import Path

from gmint.assess.evaluate import evaluate_store
from gmint.data.base import DATASETS
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.features.extract import extract, split_rows
from gmint.mint import train_mint
from gmint.models.train import TrainConfig, train_audited

SETUPS = ("entry", "middle", "output", "combined")


def run_demo(workdir: Path, *, seed: int = 0, epochs: int = 40, show_progress: bool = True) -> dict[str, object]:
    """Audit a small CNN trained on 40% of digits, with every comparison a reader needs.

    Steps: a seeded split (40% members, 40% external, 20% for a negative control); the audited CNN on
    the members and a control CNN on the control rows; MEAN Weight Modifiers of the combined layers;
    an MLP MINT classifier per layer setup fitted on the auditor's pool; activation-MINT and the
    loss threshold on the same rows; the same gMINT pipeline on the control model (must be chance).
    Run again in the same folder, it reuses the finished models as they are (resuming a finished run
    writes nothing) and prints the same figures; so does any other machine, whatever its core count.

    Returns:
        {"split": sizes, "audited"/"control": the models' records, "results": name → evaluation,
        "paths": files}.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = DATASETS.get("digits")()
    split = make_split(data, members=0.4, external=0.4, control=0.2, holdout=0.5, seed=seed)
    split.save(workdir / "split.json")
    config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed)
    models = {role: train_audited(data, split, arch="small_cnn", transform=Transform(), config=config,
                                  out=workdir / f"{role}.pt", resume=True, negative_control=role == "control",
                                  show_progress=show_progress)
              for role in ("audited", "control")}
    rows = split_rows(split)

    def store(role: str, source: str) -> Path:
        return extract(models[role], data, rows, out=workdir / f"{role}-{source}.h5", layers="combined",
                       reduction="mean", source=source, engine="auto", split=split, seed=seed, overwrite=True,
                       show_progress=show_progress)

    def audit(path: Path, name: str, setup: str, kind: str = "mlp") -> dict[str, object]:
        mint = train_mint(path, kind=kind, setup=setup, seed=seed)
        mint.save(workdir / f"mint-{name}.pt")
        return evaluate_store(mint, path, seed=seed)

    gradients = store("audited", "gradient")
    results = {f"gMINT {setup}": audit(gradients, setup, setup) for setup in SETUPS}
    results["activation-MINT combined"] = audit(store("audited", "activation"), "activation", "combined")
    results["negative control (gMINT combined)"] = audit(store("control", "gradient"), "control", "combined")
    return {
        "split": {"members": len(split.members), "external": len(split.external), "control": len(split.control),
                  "pool": len(split.pool), "holdout": len(split.holdout)},
        "audited": models["audited"].meta["record"],
        "control": models["control"].meta["record"],
        "results": results,
        "paths": {"workdir": str(workdir), "store": str(gradients)},
    }
