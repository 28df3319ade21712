"""Command lines from dataclasses: every field is a flag, its ``help`` metadata the help text.

    @dataclass
    class Args:
        lr: float = field(default=1e-5, metadata={"help": "learning rate"})

    args = parse_args(Args, argv)    # --lr 3e-5 ; --help lists every field with its default

Booleans are ``--flag`` / ``--no-flag``; tuples and lists take several values
(``--stages 8 16 32``); ``X | None`` fields accept ``none``. ``__post_init__`` checks run
after parsing, and their ``ValueError`` becomes an argparse error naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _converter(tp: Any, optional: bool):
    def convert(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        return tp(text)

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def build_parser(cls: type, *, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help_text = f"{help_text} (default: {shown})"
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            item = typing.get_args(tp)[0]
            parser.add_argument(flag, dest=f.name, nargs="+", type=item, default=default, help=help_text)
            continue
        choices = f.metadata.get("choices")
        parser.add_argument(flag, dest=f.name, type=_converter(tp, optional), default=default,
                            choices=choices, help=help_text)
    return parser


def parse_args(cls: type[T], argv: Sequence[str] | None = None, *, description: str | None = None,
               prog: str | None = None) -> T:
    """Parse ``argv`` into an instance of the dataclass ``cls`` (errors exit like argparse)."""
    parser = build_parser(cls, description=description, prog=prog)
    namespace = parser.parse_args(argv)
    values = vars(namespace)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        if typing.get_origin(tp) is tuple and isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def given_flags(args: Any, argv: Sequence[str]) -> set[str]:
    """Field names set explicitly on the command line (``--no-x`` counts as giving ``x``)."""
    names = {f.name for f in dataclasses.fields(args)}
    given = set()
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg.split("=")[0][2:].replace("-", "_")
        if name not in names and name.startswith("no_") and name[3:] in names:
            name = name[3:]
        given.add(name)
    return given


def with_defaults(args: T, argv: Sequence[str], defaults: dict[str, Any]) -> T:
    """``args`` with ``defaults`` (e.g. a demo preset) for every field the command line did not set."""
    given = given_flags(args, argv)
    return dataclasses.replace(args, **{k: v for k, v in defaults.items() if k not in given})
