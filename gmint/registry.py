"""A small named registry: one mechanism for every pluggable choice (reductions, engines, datasets, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gmint.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise an error that lists the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering an object under `name` (and optional aliases)."""

        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items:
                    raise ValueError(f"{self.kind} '{key}' is already registered")
                self._items[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as `name`.

        Args:
            name: a registered name or alias.

        Raises:
            UnknownNameError: `name` is not registered; the message lists the names that are.
        """
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; choose from {self.names()}") from None

    def names(self) -> list[str]:
        """Every registered name and alias, sorted: what error messages and the CLI's help list."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
