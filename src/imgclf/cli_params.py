"""Click arguments and options generated from the config dataclasses' declared options
(``imgclf.options``), and the values typed back into them: each option is declared once."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from . import options as declared_options

_TYPES = {int: int, float: float, str: str, bool: bool}


def _click_type(hint: Any) -> Any:
    """``int | None`` -> int; lists and parsed values (colours) are typed as text."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return _TYPES.get(args[0] if len(args) == 1 else hint, str)


def config_params(config_class: type) -> Callable[[Callable], Callable]:
    """Click arguments and options generated from a config dataclass's ``option`` fields.

    Example
    -------
    >>> from imgclf.exports.config import ExportConfig
    >>> @click.command()
    ... @config_params(ExportConfig)
    ... def export(**values): ...
    """
    hints = typing.get_type_hints(config_class)

    def decorate(f: Callable) -> Callable:
        for field in reversed(declared_options.declared(config_class)):
            meta, name = field.metadata, declared_options.cli_name(field)
            if meta["argument"]:
                f = click.argument(field.name, nargs=-1 if meta["many"] else 1, required=meta["required"])(f)
                continue
            for old in meta["aliases"]:
                f = click.option(old, f"{field.name}__{old.strip('-')}", help=f"Old name of {name}.",
                                 metavar=meta["metavar"], default=None)(f)
            f = click.option(name, field.name, **_option_kwargs(field, hints[field.name]))(f)
        return f

    return decorate


def _option_kwargs(field: Any, hint: Any) -> dict[str, Any]:
    meta = field.metadata
    kind = _click_type(hint)
    default = field.default if field.default_factory is dataclasses.MISSING else field.default_factory()
    if kind is bool:
        return {"is_flag": True, "default": bool(default), "help": meta["help"]}
    if meta["many"]:
        default = ",".join(default)
    elif meta["shown"] is not None:
        default = meta["shown"]
    metavar = meta["metavar"]
    if meta["choices"]:
        metavar = ("[" + "|".join(meta["choices"]) + "]") if not meta["many"] else ",".join(meta["choices"])
    return {
        "type": str if meta["many"] or meta["parse"] else kind,
        "default": default,
        "show_default": default not in (None, ""),
        "help": meta["help"],
        "metavar": metavar,
    }


def config_values(ctx: click.Context, config_class: type, given_only: bool = False) -> dict[str, Any]:
    """The command's values for ``config_class``'s fields (only those typed on the command
    line with ``given_only``); an old option name stands for its field."""
    out: dict[str, Any] = {}
    for field in declared_options.declared(config_class):
        for old in field.metadata["aliases"]:
            value = ctx.params.get(f"{field.name}__{old.strip('-')}")
            if value is not None:
                out[field.name] = value
        if field.name not in ctx.params:
            continue
        value = ctx.params[field.name]
        if field.metadata["argument"] and field.metadata["many"]:
            value = list(value)
        if not given_only or ctx.get_parameter_source(field.name) == ParameterSource.COMMANDLINE:
            out.setdefault(field.name, value)
    return out
