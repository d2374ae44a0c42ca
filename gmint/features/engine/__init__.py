"""Weight Modifier engines, by name: each declares itself and its capabilities with `register_engine`.

`hooks` (rank 0) is the fast path for Linear/Conv2d layers, checked once per model (`plan_hooks`); `vmap`
(rank 1) is torch.func, exact for any model it can run; `naive` (rank 2) is the definition — the model
run on each sample alone — and the only one for TorchScript. `auto` chooses: the fastest engine that
agrees with the naive loop on the batch (see `selfcheck`; an extraction chooses once, on its first batch).
"""

from __future__ import annotations

from gmint.features.engine import hooks, naive, vmap  # noqa: F401  (each registers its engine)
from gmint.features.engine.base import ENGINES, LOSSES, Engine, EngineResult, EngineSpec, check_auditable
from gmint.features.engine.hooks import hooks_engine
from gmint.features.engine.naive import naive_engine
from gmint.features.engine.selfcheck import EngineChoice, auto_engine, candidates, choose_engine
from gmint.features.engine.vmap import vmap_engine

__all__ = ["ENGINES", "LOSSES", "Engine", "EngineChoice", "EngineResult", "EngineSpec", "auto_engine", "candidates",
           "check_auditable", "choose_engine", "hooks_engine", "naive_engine", "vmap_engine"]
