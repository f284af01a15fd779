"""Options declared once: the fields of an operation's config dataclass carry their default,
help text, allowed values and command-line spelling.

``imgclf.cli`` generates its click options from these fields, and ``validate_options``
checks a config's values with one-line errors that echo the bad value and what is allowed,
so Python callers and the command line get the same answer from the same place.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Rule:
    """A condition on a value and how to say it: ``Rule(lambda v: v >= 1, "a whole number >= 1")``."""

    ok: Callable[[Any], bool]
    what: str


def whole(minimum: int) -> Rule:
    """A whole number of at least ``minimum``. Example: ``whole(1).ok(0)`` -> ``False``."""
    return Rule(lambda v: v >= minimum, f"a whole number >= {minimum}")


def positive(example: str) -> Rule:
    """A number above 0. Example: ``positive("0.001").what`` -> ``'a positive number, e.g. 0.001'``."""
    return Rule(lambda v: v > 0, f"a positive number, e.g. {example}")


def fraction(low_open: bool = False, high_open: bool = True) -> Rule:
    """A fraction in [0, 1), or (0, 1] etc. Example: ``fraction().ok(1.0)`` -> ``False``."""
    low, high = ("(" if low_open else "["), (")" if high_open else "]")
    return Rule(
        lambda v: (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1),
        f"a fraction in {low}0, 1{high}",
    )


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    choices: Sequence[str] | None = None,
    rule: Rule | None = None,
    cli: str | None = None,
    aliases: Sequence[str] = (),
    parse: Callable[[str], Any] | None = None,
    many: bool = False,
    argument: bool = False,
    required: bool = True,
    factory: Callable[[], Any] | None = None,
    metavar: str | None = None,
    shown: str | None = None,
) -> Any:
    """A config field with everything the CLI and the checks need to know about it.

    ``choices``: the allowed values; ``rule``: any other condition; ``cli``: the option's
    name when it is not ``--field-name``; ``aliases``: older names still accepted;
    ``parse``: turns the text a user types into the value (also applied to strings given
    from Python); ``many``: a list, typed comma-separated; ``argument``: a positional
    argument rather than an option (``required=False``: it may be left out); ``shown``: the default as a user would type it, when
    it is not plain text (a colour). ``None`` is always allowed when it is the default.

    Example
    -------
    >>> @dataclass
    ... class Demo:
    ...     epochs: int = option(100, "Most epochs.", rule=whole(1))
    >>> validate_options(Demo(epochs=0))
    Traceback (most recent call last):
    imgclf.errors.UsageError: --epochs 0: must be a whole number >= 1
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "rule": rule,
        "cli": cli,
        "aliases": tuple(aliases),
        "parse": parse,
        "many": many,
        "argument": argument,
        "required": required,
        "metavar": metavar,
        "shown": shown,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_of(config_class: type, name: str) -> Any:
    """The declaration of ``config_class``'s option ``name``, for another operation that
    takes the same option: its default, help and checks stay declared once.

    Example
    -------
    >>> @dataclass
    ... class Demo:
    ...     epochs: int = option(100, "Most epochs.", rule=whole(1))
    >>> @dataclass
    ... class Other:
    ...     epochs: int = option_of(Demo, "epochs")
    >>> Other().epochs
    100
    """
    f = config_class.__dataclass_fields__[name]
    if f.default_factory is not _MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
    return dataclasses.field(default=f.default, metadata=f.metadata)


def cli_name(field: dataclasses.Field) -> str:
    """The option's spelling on the command line. Example: ``batch_size`` -> ``--batch-size``."""
    return field.metadata.get("cli") or "--" + field.name.replace("_", "-")


def declared(config: Any) -> list[dataclasses.Field]:
    """The fields of a config class (or instance) declared with ``option``."""
    return [f for f in dataclasses.fields(config) if "help" in f.metadata]


def parse_given(config: Any) -> None:
    """Turn text values into what the fields hold (``parse``, comma-separated lists); called
    by a config's ``__post_init__``, so ``background="black"`` works from Python too."""
    for f in declared(config):
        value = getattr(config, f.name)
        if f.metadata["many"] and isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
            if not items:
                raise UsageError(f"{cli_name(f)}: give at least one value")
            setattr(config, f.name, items)
        elif f.metadata["parse"] is not None and isinstance(value, str):
            setattr(config, f.name, f.metadata["parse"](value))


# Values from a JSON file or a Python caller arrive with any type; whole numbers beyond this
# only come from mistakes (or attacks) and overflow TensorFlow's 32-bit integers.
_LARGEST = 2**31 - 1
_KINDS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    int: (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= _LARGEST,
        f"a whole number (at most {_LARGEST})",
    ),
    float: (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= _LARGEST,
        f"a number (at most {_LARGEST})",
    ),
    str: (lambda v: isinstance(v, (str, os.PathLike)), "text"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(config: Any, f: dataclasses.Field) -> tuple[Callable[[Any], bool], str] | None:
    """The check of a field's declared type (``int``, ``float | None``, ``list[str]``...)."""
    try:
        hint = _hints(type(config)).get(f.name)
    except (NameError, TypeError):  # an annotation only importable for type checkers
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if typing.get_origin(args[0]) is list:
        return _KINDS.get(typing.get_args(args[0])[0])
    if len(args) == 1:
        return _KINDS.get(args[0])
    return None  # a union of several types (a colour as text or a tuple...): checked by its rule


def validate_options(config: Any) -> None:
    """``UsageError`` naming the first option whose value is not allowed, and what is.

    Example
    -------
    >>> validate_options(TrainConfig(data="photos", augment="wild"))  # doctest: +SKIP
    imgclf.errors.UsageError: --augment wild: unknown; choose from light, strong, off
    """
    for f in declared(config):
        value = getattr(config, f.name)
        if value is None and f.default is None:
            continue
        meta, name = f.metadata, cli_name(f)
        kind = _kind(config, f)
        if meta["many"] and not isinstance(value, (list, tuple)):
            raise UsageError(f"{name} {_short(value)}: must be a list")
        for item in value if meta["many"] else [value]:
            if kind is not None and not kind[0](item):
                raise UsageError(f"{name} {_short(item)}: must be {kind[1]}")
            if meta["choices"] and item not in meta["choices"]:
                raise UsageError(f"{name} {item}: unknown; choose from {', '.join(meta['choices'])}")
        if meta["rule"] is not None and not meta["rule"].ok(value):
            raise UsageError(f"{name} {value}: must be {meta['rule'].what}")


def _short(value: Any) -> str:
    """A bad value as the user wrote it, cut short (a config file can hold anything)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
