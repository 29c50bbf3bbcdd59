"""Settings dataclasses: one declaration per setting gives its default, help line, flag and validation.

    @dataclass(frozen=True)
    class DecodeConfig:
        top_p: float = setting(1.0, "nucleus sampling mass (1 = off)", bounds="(0, 1]")

        def __post_init__(self) -> None:
            validate_settings(self)

    add_settings_args(parser, DecodeConfig)      # --top_p FLOAT, default and help from the field
    DecodeConfig(**settings_from_args(args, DecodeConfig))

Every run, decoding, influence and study setting is declared this way, so each default is written once and
every value is checked where it is defined: its type (an int field takes no 2.5, a float field no nan or
inf), its choices and its bounds. Errors are one line naming the flag (a ConfigError, which the scripts print
as `error: ...` with exit code 2).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import MISSING, Field, field, fields
from typing import Any

from picollm.core.errors import ConfigError

_BOUNDS = re.compile(r"^\s*([\[(])\s*(-?inf|-?[\d.e+-]+)\s*,\s*(-?inf|-?[\d.e+-]+)\s*([\])])\s*$")


def setting(default: Any, help: str, *, choices: tuple | None = None, bounds: str | None = None,
            flag: str | None = None, kind: type | None = None) -> Any:
    """A dataclass field with its help line, allowed choices, and bounds in interval notation: "[0, 1)",
    "(0, inf)", "[1, inf)". flag: the command-line name when it differs from the field's. kind: the type of
    the values when the default is None (None then means "not set": e.g. "the search space's own")."""
    if bounds is not None and not _BOUNDS.match(bounds):
        raise ValueError(f"bad bounds {bounds!r}")  # a programming error, not a user's
    kind = kind or (type(default) if default is not None else None)
    return field(default=default, metadata={"help": help, "choices": choices, "bounds": bounds, "flag": flag,
                                            "kind": kind})


def flag_name(f: Field) -> str:
    return "--" + _dest(f)


def _dest(f: Field) -> str:
    return f.metadata.get("flag") or f.name


def _in_bounds(value: float, bounds: str) -> bool:
    low_kind, low, high, high_kind = _BOUNDS.match(bounds).groups()
    low_v, high_v = float(low), float(high)
    above = value >= low_v if low_kind == "[" else value > low_v
    below = value <= high_v if high_kind == "]" else value < high_v
    return above and below


def _describe(kind: type, bounds: str | None) -> str:
    noun = {int: "an integer", float: "a finite number"}.get(kind, f"a {kind.__name__}")
    if not bounds:
        return noun
    low_kind, low, high, high_kind = _BOUNDS.match(bounds).groups()
    if high != "inf":
        return f"in {low_kind}{low}, {high}{high_kind}"
    if kind is int and (low_kind, low) == ("[", "1"):
        return "a positive integer"
    return f"{noun} {'>=' if low_kind == '[' else '>'} {low}"


def check_value(f: Field, value: Any) -> None:
    """Raise a one-line ConfigError unless value is allowed for field f (None is always allowed: it marks a
    setting that does not apply, e.g. one the model family ignores)."""
    if value is None:
        return
    kind = f.metadata.get("kind")
    bounds = f.metadata.get("bounds")
    name = flag_name(f)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is not None:
        ok = isinstance(value, kind)
    else:
        ok = True
    if ok and bounds is not None:
        ok = _in_bounds(value, bounds)
    if not ok:
        raise ConfigError(f"{name} must be {_describe(kind, bounds)}; got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def validate_settings(obj: Any) -> None:
    """Check every field of a settings dataclass instance (see check_value)."""
    for f in fields(obj):
        check_value(f, getattr(obj, f.name))


def add_settings_args(parser: argparse.ArgumentParser | Any, cls: type, exclude: tuple[str, ...] = (),
                      group_title: str | None = None, override: bool = False) -> None:
    """One flag per field of cls, with the field's help line and default.

    override: every flag defaults to None, so only what the user typed is applied on top of another
    source of settings (a search space, a preset); the help still shows the field's own default.
    """
    group = parser.add_argument_group(group_title) if group_title else parser
    for f in fields(cls):
        if f.name in exclude or not f.metadata.get("help"):
            continue
        default = f.default if f.default is not MISSING else None
        shown = "" if default is None else f" (default: {default})"
        kwargs: dict[str, Any] = {"default": None if override else default, "dest": _dest(f),
                                  "help": f"{f.metadata['help']}{shown}"}
        kind = f.metadata.get("kind") or str
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = kwargs["type"].__name__.upper()
        group.add_argument(flag_name(f), **kwargs)


def settings_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of cls found in parsed args (None values, i.e. flags not given with override=True, dropped)."""
    given = vars(args)
    return {f.name: given[_dest(f)] for f in fields(cls) if given.get(_dest(f)) is not None}
