"""Weight Modifier engines, by name. Every engine has the signature of `vmap_engine`.

`vmap` is the reference (exact for any model), `naive` the ground truth for tests, `hooks` the fast path
for Linear/Conv2d layers (falls back to `vmap` per layer), `auto` picks `hooks` when every selected
parameter is a Linear/Conv2d weight or bias and `vmap` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from gmint.engine.base import LOSSES, EngineResult, check_auditable
from gmint.engine.hooks import auto_engine, choose_engine, hooks_engine
from gmint.engine.naive import naive_engine
from gmint.engine.vmap import vmap_engine
from gmint.registry import Registry

Engine = Callable[..., EngineResult]
ENGINES: Registry[Engine] = Registry("engine")
ENGINES.register("vmap")(vmap_engine)
ENGINES.register("naive")(naive_engine)
ENGINES.register("hooks")(hooks_engine)
ENGINES.register("auto")(auto_engine)

__all__ = ["ENGINES", "LOSSES", "Engine", "EngineResult", "auto_engine", "check_auditable", "choose_engine",
           "hooks_engine", "naive_engine", "vmap_engine"]
