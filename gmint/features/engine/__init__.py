"""Weight Modifier engines, by name. Every engine has the signature of `vmap_engine`.

`vmap` is the reference (exact for any model torch.func can run), `naive` the definition (the model run
on each sample alone), `hooks` the fast path for Linear/Conv2d layers (falls back to `vmap` per layer where
its conditions fail on the model), `auto` the fastest of them that agrees with the naive loop on the batch
(see `selfcheck`; an extraction chooses once, on its first batch, with `choose_engine`).
"""

from __future__ import annotations

from collections.abc import Callable

from gmint.features.engine.base import LOSSES, EngineResult, check_auditable
from gmint.features.engine.hooks import hooks_engine
from gmint.features.engine.naive import naive_engine
from gmint.features.engine.selfcheck import EngineChoice, auto_engine, choose_engine
from gmint.features.engine.vmap import vmap_engine
from gmint.registry import Registry

Engine = Callable[..., EngineResult]
ENGINES: Registry[Engine] = Registry("engine")
ENGINES.register("vmap")(vmap_engine)
ENGINES.register("naive")(naive_engine)
ENGINES.register("hooks")(hooks_engine)
ENGINES.register("auto")(auto_engine)

__all__ = ["ENGINES", "LOSSES", "Engine", "EngineChoice", "EngineResult", "auto_engine", "check_auditable",
           "choose_engine", "hooks_engine", "naive_engine", "vmap_engine"]
