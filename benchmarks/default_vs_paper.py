"""gmint's default classifier beside the paper's form and the loss threshold, on one grid-like MNIST cell.

The cell: a MobileNet (width 0.25) trained on 1,000 MNIST members (`paper` protocol, Adam 1e-4, batch 64, until 99%
of its members are classified correctly, 100 epochs at most); MEAN Weight Modifiers of its combined layers. On its
store, `gmint` (the default) and `mlp` (the paper's form) are each fitted with five classifier seeds and evaluated on
the same held-out rows: AUC with its interval, TPR at 1% FPR, the paired AUC difference with the loss threshold, the
ε lower bound, and the model cross-validation chose. The median over seeds is the stated figure.

    python -m benchmarks.default_vs_paper --data-root ../shared/data --work runs/default-vs-paper \
        --out benchmarks/results/default-vs-paper-cpu.md
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gmint.assess.evaluate import evaluate_store
from gmint.data.readers import load_dataset
from gmint.experiment import Probe, Recipe, run_cell
from gmint.mint import train_mint
from gmint.models.train import TrainConfig

SEEDS = 5
KINDS = ("gmint", "mlp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="the cell's folder (reused when run again)")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown report")
    args = parser.parse_args()
    data = load_dataset("mnist", args.data_root)
    recipe = Recipe(arch="mobilenet", arch_options={"width": 0.25},
                    train=TrainConfig(epochs=100, batch_size=64, optimizer="adam", lr=1e-4, target_accuracy=0.99,
                                      seed=0),
                    probes=(Probe("gMINT", "combined"),), members=1000, external=1000, protocol="paper", n_boot=1)
    store = run_cell(data, recipe, args.work).measurements[0].evaluation.store
    lines = ["# gmint's default beside the paper's form (MNIST MobileNet, combined setup, D100)", "",
             "| classifier | seed | AUC (95% interval) | TPR @ 1% FPR | AUC − loss threshold (paired) | ε lower bound "
             "| chosen by cross-validation |", "|---|---|---|---|---|---|---|"]
    summary = []
    for kind in KINDS:
        aucs = []
        for seed in range(SEEDS):
            mint = train_mint(store, kind=kind, setup="combined", seed=seed)
            result = evaluate_store(mint, store, n_boot=1000, seed=0)
            auc, diff = result.mint["auc"], result.versus_loss
            assert auc.value is not None and diff is not None and result.epsilon is not None
            aucs.append(auc.value)
            lines.append(f"| {kind} | {seed} | {auc.value:.3f} [{auc.low:.3f}, {auc.high:.3f}] | "
                         f"{result.mint['tpr_at_1pct_fpr'].value} | {diff.value:+.3f} [{diff.low:+.3f}, "
                         f"{diff.high:+.3f}] | {result.epsilon.value:.2f} | {mint.record.get('chosen', '—')} |")
        summary.append(f"- {kind}: median AUC {statistics.median(aucs):.3f} over {SEEDS} seeds "
                       f"({min(aucs):.3f}–{max(aucs):.3f})")
    loss = result.loss_threshold["auc"]
    summary.append(f"- loss threshold: AUC {loss.value:.3f} [{loss.low:.3f}, {loss.high:.3f}], TPR @ 1% FPR "
                   f"{result.loss_threshold['tpr_at_1pct_fpr'].value}")
    args.out.write_text("\n".join([*lines, "", *summary, ""]), encoding="utf-8")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
