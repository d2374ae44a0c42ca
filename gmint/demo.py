"""The whole audit on scikit-learn's bundled digits, offline: the walking example of every stage."""

from __future__ import annotations

from pathlib import Path

from gmint.data.base import DATASETS
from gmint.data.split import make_split
from gmint.data.transforms import Transform
from gmint.evaluate import evaluate_store
from gmint.extract import extract, split_rows
from gmint.mint import train_mint
from gmint.models.train import TrainConfig, train_audited

SETUPS = ("entry", "middle", "output", "combined")


def run_demo(workdir: Path, *, seed: int = 0, epochs: int = 40, show_progress: bool = True) -> dict[str, object]:
    """Split digits, train a small CNN on the members, extract MEAN Weight Modifiers of the combined
    layers, fit an MLP MINT classifier per layer setup on the auditor's pool, evaluate on held-out rows.

    Returns:
        {"split": sizes, "audited": the model's record, "results": setup → evaluation, "paths": files}.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = DATASETS.get("digits")()
    split = make_split(data, members=0.5, external=0.5, holdout=0.5, seed=seed)
    split.save(workdir / "split.json")
    audited = train_audited(data, split, arch="small_cnn", transform=Transform(),
                            config=TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=seed),
                            out=workdir / "audited.pt", resume=True, show_progress=show_progress)
    store = extract(audited, data, split_rows(split), out=workdir / "features.h5", layers="combined",
                    reduction="mean", engine="vmap", split=split, seed=seed, overwrite=True,
                    show_progress=show_progress)
    results = {}
    for setup in SETUPS:
        mint = train_mint(store, kind="mlp", setup=setup, seed=seed)
        mint.save(workdir / f"mint-{setup}.pt")
        results[setup] = evaluate_store(mint, store, seed=seed)
    return {
        "split": {"members": len(split.members), "external": len(split.external), "pool": len(split.pool),
                  "holdout": len(split.holdout)},
        "audited": audited.meta["record"],
        "results": results,
        "paths": {"workdir": str(workdir), "store": str(store)},
    }
