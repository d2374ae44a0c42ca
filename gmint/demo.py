"""The whole audit on scikit-learn's bundled digits, offline: `gmint audit` on a bundled configuration.

`gmint/audit/demo.toml` is the configuration: a small CNN trained on 40% of the digits, a control CNN on 20%,
MEAN Weight Modifiers of its entry, middle and output layers, an MLP MINT classifier per layer setup fitted on
the auditor's pool, activation-MINT, the loss threshold and the negative control on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gmint.audit.config import AuditConfig, load_config, render
from gmint.audit.run import AuditRun, run_audit

DEMO_CONFIG = Path(__file__).resolve().parent / "audit" / "demo.toml"


def demo_config(*, seed: int = 0, epochs: int = 40) -> AuditConfig:
    """The bundled demo configuration, with its seed and the audited model's epochs as asked."""
    config, _ = load_config(DEMO_CONFIG)
    return replace(config, seed=seed, model=replace(config.model, epochs=epochs))


def run_demo(workdir: Path, *, seed: int = 0, epochs: int = 40, overwrite: bool = False,
             show_progress: bool = True) -> AuditRun:
    """Run the demo's audit in `workdir`; run again there, it reuses the finished models and stores as they are
    and prints the same figures (so does any other machine, whatever its core count).

    Args:
        workdir: the demo's folder.
        seed: seeds the split, the training, the extraction, the classifiers and the bootstrap.
        epochs: training epochs of both CNNs.
        overwrite: accept a folder that holds other files or another run's configuration.
        show_progress: progress bars for training and extraction.
    """
    config = demo_config(seed=seed, epochs=epochs)
    return run_audit(config, DEMO_CONFIG.parent, Path(workdir), config_text=render(config), overwrite=overwrite,
                     show_progress=show_progress)
