"""Settings dataclasses are the one source of every command-line flag.

A field declared with :func:`option` carries its default, its help text and,
where plain ``int``/``float``/``str`` would accept bad values, a checked
argparse ``type`` or ``choices``. :func:`add_arguments` turns the fields of a
dataclass into ``--<field name>`` flags with exactly that default and help,
so a new setting is one line in one dataclass::

    patience: int = option(10, "early stopping: epochs without val_loss improvement", type=positive_int)

becomes ``--patience`` (default 10, checked positive) in ``--help`` and in the
parsed namespace. Booleans become ``--flag`` (default False) or
``--flag/--no-flag`` (default True). A field without ``help`` metadata is not
a flag (set only by code). :func:`from_args` builds the dataclass back from
the parsed namespace.

This module imports no TensorFlow (the scripts build their parsers before
importing it, so ``--help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

HELP = "help"
TYPE = "type"
CHOICES = "choices"
GROUP = "group"
# argparse ``type=`` for a plain annotation (field types are strings under ``from __future__ import annotations``)
_PLAIN_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def option(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[Any] | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring).

    ``group`` overrides the help section the dataclass's
    :func:`add_arguments` call puts the flag in.
    """
    metadata: dict[str, Any] = {HELP: help}
    if type is not None:
        metadata[TYPE] = type
    if choices is not None:
        metadata[CHOICES] = tuple(choices)
    if group is not None:
        metadata[GROUP] = group
    return dataclasses.field(default=default, metadata=metadata)


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line flags (declared with :func:`option`)."""
    return [f for f in dataclasses.fields(cls) if HELP in f.metadata]


def _argument_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    meta = f.metadata
    kwargs: dict[str, Any] = {"default": f.default, "help": meta[HELP]}
    if isinstance(f.default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        return kwargs
    if CHOICES in meta:
        kwargs["choices"] = meta[CHOICES]
    annotation = str(f.type).replace(" ", "")
    cast = meta.get(TYPE) or _PLAIN_TYPES.get(annotation)
    if cast is not None and cast is not str:
        kwargs["type"] = cast
    return kwargs


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    groups: dict[str, Iterable[str]] | None = None,
    skip: Iterable[str] = (),
) -> None:
    """Add one ``--<name>`` flag per :func:`option` field of ``cls``, in field order.

    ``groups`` maps a help-section title to field names placed there (the
    others go to the parser itself, or to the field's own ``group``).
    """
    section_of = {name: title for title, names in (groups or {}).items() for name in names}
    sections: dict[str, argparse._ArgumentGroup] = {}
    skipped = set(skip)
    for f in flag_fields(cls):
        if f.name in skipped:
            continue
        title = f.metadata.get(GROUP) or section_of.get(f.name)
        target: Any = parser
        if title:
            if title not in sections:
                sections[title] = _find_group(parser, title) or parser.add_argument_group(title)
            target = sections[title]
        target.add_argument(f"--{f.name}", **_argument_kwargs(f))


def _find_group(parser: argparse.ArgumentParser, title: str) -> Any:
    return next((g for g in parser._action_groups if g.title == title), None)


def from_args(cls: type[T], args: argparse.Namespace | dict[str, Any], **extra: Any) -> T:
    """``cls`` built from the parsed flags that are its fields (others are ignored)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of every field of ``cls`` that has one."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


__all__ = ["option", "flag_fields", "add_arguments", "from_args", "defaults"]
