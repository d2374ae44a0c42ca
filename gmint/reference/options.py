"""Typed attack options: each attack declares the options it takes as a frozen dataclass whose fields say their range.

Options arrive as JSON ({"rmia": {"gamma": 2}}). Read as a loose mapping, a misspelt key was ignored and a value
outside its range ran anyway: RMIA with γ ≤ 0 counts every likelihood ratio as above it, calls every row a member
and reports AUC 0.500 [0.500, 0.500] as if it were a finding. Parsed into the attack's own record, an option it
does not take or a value outside its range is refused with one line naming every option it does take and each
one's range; the values the attack reads are then of their declared type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar, TypeVar, overload

from gmint.errors import InputError


class _Rejected(Exception):
    """A value outside an option's range (turned into the one-line InputError by `AttackOptions.parse`)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Accepts:
    """What one option accepts: its range in words (for messages and help) and the check that converts a JSON
    value into the value stored, raising `_Rejected` for anything else."""

    words: str
    convert: Callable[[object], object]


def _real(value: object) -> float:
    # JSON true/false are ints to Python; an option's number is never a boolean.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Rejected
    return float(value)


def number(*, low: float | None = None, high: float | None = None, above: float | None = None,
           also: tuple[str, ...] = ()) -> Accepts:
    """A finite number in [low, high] (or > above), or one of the words in `also`."""
    bounds = ([f"> {above:g}"] if above is not None else []) + \
        ([f"in [{low:g}, {high:g}]"] if low is not None and high is not None else
         [f"≥ {low:g}"] if low is not None else [f"≤ {high:g}"] if high is not None else [])
    words = f"a number {' '.join(bounds)}".strip() + "".join(f', or "{w}"' for w in also)

    def convert(value: object) -> object:
        if isinstance(value, str) and value in also:
            return value
        x = _real(value)
        if (above is not None and not x > above) or (low is not None and x < low) or \
                (high is not None and x > high):
            raise _Rejected
        return x

    return Accepts(words, convert)


def whole(*, low: int, none: str = "") -> Accepts:
    """A whole number ≥ low, or (where `none` says what it means) null."""
    words = f"a whole number ≥ {low}" + (f", or null for {none}" if none else "")

    def convert(value: object) -> object:
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _Rejected
        return value

    return Accepts(words, convert)


def one_of(names: tuple[str, ...]) -> Accepts:
    """One of `names`."""
    def convert(value: object) -> object:
        if value not in names:
            raise _Rejected
        return value

    return Accepts(f"one of {', '.join(names)}", convert)


def json_mapping(what: str) -> Accepts:
    """A JSON object (its keys checked by whoever reads it: `what` says who)."""
    def convert(value: object) -> object:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Rejected
        return dict(value)

    return Accepts(f"an object of {what}", convert)


@overload
def option(accepts: Accepts, default: T) -> T: ...


@overload
def option(accepts: Accepts, *, factory: Callable[[], T]) -> T: ...


def option(accepts: Accepts, default: object = None, *, factory: Callable[[], object] | None = None) -> object:
    """A field of an AttackOptions record: its default (or the factory of a mutable one) and what it accepts.

    Typed as the default it is given, so a record's field and its default cannot disagree.
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"accepts": accepts})
    return field(default=default, metadata={"accepts": accepts})


OptionsT = TypeVar("OptionsT", bound="AttackOptions")


@dataclass(frozen=True)
class AttackOptions:
    """An attack's options; this base takes none. Subclasses declare theirs with `option`.

    Attributes:
        who: the attacks a subclass serves, for messages where no attack name is at hand.
    """

    who: ClassVar[str] = "this attack"

    @classmethod
    def ranges(cls) -> dict[str, str]:
        """Each option's name and its range in words, in declaration order."""
        return {f.name: f.metadata["accepts"].words for f in fields(cls)}

    @classmethod
    def described(cls) -> str:
        """'takes a (a number in [0, 1]), gamma (a number > 0)', or 'takes no options'."""
        ranges = cls.ranges()
        if not ranges:
            return "takes no options"
        return "takes " + ", ".join(f"{name} ({words})" for name, words in ranges.items())

    @classmethod
    def parse(cls: type[OptionsT], given: Mapping[str, object], attack: str | None = None) -> OptionsT:
        """The options `given` for `attack` (a name, for messages), each checked against its range; the rest at
        their defaults.

        Raises:
            InputError: an option the attack does not take or a value outside its range: one line naming
                every option the attack takes, with its range.
        """
        who = f"attack '{attack}'" if attack else cls.who
        if not isinstance(given, Mapping):
            raise InputError(f"the options of {who} must be an object of option names and values; it "
                             f"{cls.described()}")
        accepted = {f.name: f.metadata["accepts"] for f in fields(cls)}
        values: dict[str, object] = {}
        for key, value in given.items():
            if key not in accepted:
                raise InputError(f"{who} has no option '{key}'; it {cls.described()}")
            try:
                values[key] = accepted[key].convert(value)
            except _Rejected:
                raise InputError(f"{who}: {key} = {json.dumps(value)} is not {accepted[key].words}; "
                                 f"it {cls.described()}") from None
        return cls(**values)

    def to_dict(self) -> dict[str, object]:
        """The options as JSON values (what a result records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
