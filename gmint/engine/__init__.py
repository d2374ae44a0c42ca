"""Weight Modifier engines, by name. Every engine has the signature of `vmap_engine`."""

from __future__ import annotations

from collections.abc import Callable

from gmint.engine.base import LOSSES, EngineResult, check_auditable
from gmint.engine.naive import naive_engine
from gmint.engine.vmap import vmap_engine
from gmint.registry import Registry

Engine = Callable[..., EngineResult]
ENGINES: Registry[Engine] = Registry("engine")
ENGINES.register("vmap")(vmap_engine)
ENGINES.register("naive")(naive_engine)

__all__ = ["ENGINES", "LOSSES", "Engine", "EngineResult", "check_auditable", "naive_engine", "vmap_engine"]
