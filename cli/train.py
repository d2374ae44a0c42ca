"""`gmint train`: fit a MINT classifier on a feature store's auditor's pool."""

from __future__ import annotations

from pathlib import Path

import typer

from gmint.data.split import FRACTIONS
from gmint.features.layers import LAYER_PRESETS
from gmint.mint import DEFAULT_KIND, MINT_MODELS, train_mint
from gmint_cli.console import cli_errors, console, print_json
from gmint_cli.options import choices, json_flag, json_object, overwrite_flag
from gmint_cli.outputs import check_output


@cli_errors
def train(store: Path = typer.Argument(..., help="A complete feature store."),
          setup: str = typer.Option("all", help=f"Layer setup: all | {choices(LAYER_PRESETS)} (as recorded at "
                                                "extraction), or the store's feature names/globs, comma-separated."),
          fraction: str = typer.Option("D100", help=f"{choices(FRACTIONS)} of the auditor's pool."),
          kind: str = typer.Option(DEFAULT_KIND, help=f"MINT classifier: {choices(MINT_MODELS)}; gmint reads the "
                                                     "Weight Modifiers' per-layer norms and signed-log values with the "
                                                     "loss, the model chosen by cross-validation on the pool; mlp is "
                                                     "the paper's form (an MLP on the features); cnn needs flat "
                                                     "features, map_cnn activation maps (--source activation-maps), "
                                                     "threshold one signal, per_class a base in --options "
                                                     "({\"base\": \"mlp\"}); mlp and map_cnn take "
                                                     "{\"label_aware\": true} (the true class as an input)."),
          options: str = typer.Option("{}", help='Classifier options as a JSON object, e.g. {"hidden": [256, 64]}.'),
          seed: int = typer.Option(0, help="Seed of the fit (initialisation, validation part, sub-pools)."),
          out: Path = typer.Option(Path("mint.pt"), help="Classifier file to write."),
          overwrite: bool = overwrite_flag(),
          json_out: bool = json_flag()) -> None:
    """Fit a MINT classifier (member vs external) on the pool rows of a store."""
    check_output(out, "--out", inputs={"the store": store}, overwrite=overwrite)
    mint = train_mint(store, kind=kind, setup=setup, fraction=fraction, seed=seed,
                      options=json_object(options, "--options"))
    mint.save(out)
    r = mint.record
    if json_out:
        print_json({"out": str(out), "kind": kind, "fraction": fraction, "layers": list(mint.spec.layers),
                    "features": sum(mint.spec.dims), "record": r})
        return
    console.print(f"{out}: {kind} on {', '.join(mint.spec.layers)} ({sum(mint.spec.dims)} features), "
                  f"{fraction}: {r['members']} members + {r['external']} external, {r['fit_seconds']} s")
    if "chosen" in r:
        console.print(f"chosen by {r['folds']}-fold cross-validation on the pool: {r['chosen']} (mean fold AUC "
                      f"{r['cv_auc']})" + (f"; rule: {r['rule']}" if r.get("rule") else ""), highlight=False)
    refits = r.get("refits")
    if isinstance(refits, list) and refits:
        console.print(f"refitted after {len(refits)} fit(s) whose scores did not spread", highlight=False)
