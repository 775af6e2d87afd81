"""Typed options declared once, on a frozen dataclass, and checked the same way from every source.

A field declared with `option(default, low=..., high=..., choices=...)` carries its rule in the
field metadata; its type is the field's annotation (int, float, str or bool). Every way a value
reaches such a dataclass goes through `convert_value`: CLI text (`--spls-option window=4`), JSON
scalars (an SPLS config), pass-spec values (`insert-spls{window=4}`) and Python keyword
arguments. Unknown names are one-line errors naming the valid ones and the nearest match.

Per-layer overrides have one text form, `LAYER:name=value,name=value;LAYER:...`: a layer index
is ASCII digits (`MAX_LAYER_INDEX` at most), and since every value is checked against its rule
before it is written (numbers, or a string from a fixed set of choices), `format_layer_overrides`
can never produce text that parses into options nobody gave.

Option names are spelt with '-' for users (`k-ratio`) and '_' in Python (`k_ratio`); both are
accepted everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from esact_cc.runtime.errors import CompileError

OptionValue = int | float | str | bool

MAX_LAYER_INDEX = 65535
"""Layer indices above this are rejected as text before any int conversion of a huge number."""

_RULE = "esact.option_rule"
_LAYER_INDEX = re.compile(r"[0-9]{1,5}")
_SEPARATORS = frozenset(";,:={}\"' \t\n")
_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class Rule:
    """What values an option accepts, beyond its type."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """The low bound itself is excluded (e.g. k-ratio in (0, 1])."""
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        if self.high is None:  # only a low bound
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        left = "(" if self.low_open else "["
        return f"in {left}{self.low:g}, {self.high:g}]"


def option(default: OptionValue, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field of a typed option with its rule."""
    return dataclasses.field(default=default, metadata={
        _RULE: Rule(low, high, low_open, tuple(choices))})


def dashed(name: str) -> str:
    return name.replace("_", "-")


def python_name(name: str) -> str:
    return name.strip().replace("-", "_")


def unknown_name(what: str, name: str, valid: Iterable[str]) -> str:
    """`unknown <what> 'windw' (did you mean 'window'?; valid: a, b)` as one line."""
    valid = list(valid)
    by_folded = {v.lower().replace("_", "-"): v for v in valid}
    nearest = difflib.get_close_matches(name.lower().replace("_", "-"), by_folded, n=1)
    hint = f"did you mean '{by_folded[nearest[0]]}'? " if nearest else ""
    return f"unknown {what} {shown(name)} ({hint}valid: {', '.join(valid) or 'none'})"


def option_specs(options_class: type) -> dict[str, tuple[type, Rule]]:
    """Dashed option name -> (type, rule) for every field of `options_class` with a rule."""
    hints = typing.get_type_hints(options_class)
    return {dashed(f.name): (hints[f.name], f.metadata[_RULE])
            for f in dataclasses.fields(options_class) if _RULE in f.metadata}


def convert_value(options_class: type, name: str, value: Any, where: str) -> OptionValue:
    """`value` (text, JSON or Python scalar) as option `name` of `options_class`, checked
    against its type and rule; a one-line `CompileError` naming `where` otherwise."""
    specs = option_specs(options_class)
    key = dashed(python_name(str(name)))
    if key not in specs:
        raise CompileError(f"{where}: {unknown_name('option', str(name), specs)}")
    wanted, rule = specs[key]
    converted = _typed(key, wanted, value, where)
    message = _rule_violation(converted, rule)
    if message:
        raise CompileError(f"{where}: {key} must be {message}, got {shown(value)}")
    return converted


def _typed(key: str, wanted: type, value: Any, where: str) -> OptionValue:
    bad = CompileError(f"{where}: {key} must be {_article(wanted)}, got {shown(value)}")
    if isinstance(value, str):
        text = value.strip()
        if wanted is str:
            return text
        if wanted is bool:
            if text.lower() not in _BOOL_TEXT:
                raise bad
            return _BOOL_TEXT[text.lower()]
        if not text.isascii():  # int() accepts other scripts' digits
            raise bad
        raw: Any = text
        converter = wanted
    elif isinstance(value, (bool, np.bool_)):
        if wanted is not bool:
            raise bad
        return bool(value)
    elif isinstance(value, (int, float, np.integer, np.floating)) and wanted in (int, float):
        raw = value
        converter = _exact_int if wanted is int else float
    else:
        raise bad
    try:
        converted = converter(raw)
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise CompileError(f"{where}: {key} must be finite, got {shown(value)}")
    return converted


def _exact_int(value: int | float) -> int:
    if float(value) != int(value):
        raise ValueError(value)
    return int(value)


def shown(value: Any, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters: error lines stay short whatever was given."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _article(wanted: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[wanted]


def _rule_violation(value: OptionValue, rule: Rule) -> str:
    """'' if `value` satisfies `rule`, else what it must be."""
    if rule.choices:
        return "" if value in rule.choices else "one of " + rule.describe()
    if isinstance(value, str) and any(c in _SEPARATORS for c in value):
        return "free of separators ;,:={}\"' and spaces"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        below = rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low)
        above = rule.high is not None and value > rule.high
        if below or above:
            return rule.describe()
    return ""


def validate(instance: Any, where: str) -> None:
    """Check every ruled field of a dataclass instance (e.g. one built from Python)."""
    for f in dataclasses.fields(instance):
        if _RULE in f.metadata:
            convert_value(type(instance), f.name, getattr(instance, f.name), where)


def parse_layer_index(text: str, where: str) -> int:
    """A layer index: ASCII digits, at most `MAX_LAYER_INDEX`."""
    stripped = text.strip()
    if not _LAYER_INDEX.fullmatch(stripped) or int(stripped) > MAX_LAYER_INDEX:
        raise CompileError(f"{where}: bad layer index {shown(text)} "
                           f"(expected an integer 0..{MAX_LAYER_INDEX})")
    return int(stripped)


def parse_assignment(spec: str, where: str) -> tuple[int | None, str, str]:
    """`NAME=VALUE` -> (None, NAME, VALUE); `LAYER:NAME=VALUE` -> (LAYER, NAME, VALUE)."""
    head, colon, rest = spec.partition(":")
    layer = None
    if colon and "=" not in head:
        layer, spec_text = parse_layer_index(head, where), rest
    else:
        spec_text = spec
    name, eq, value = spec_text.partition("=")
    if not eq or not name.strip():
        raise CompileError(f"{where}: bad {shown(spec)} (expected NAME=VALUE or LAYER:NAME=VALUE)")
    return layer, name.strip(), value


def parse_layer_overrides(options_class: type, text: str, where: str
                          ) -> dict[int, dict[str, OptionValue]]:
    """`"0:threshold=2.0;3:threshold=0.9,window=2"` -> {layer: {python name: value}}."""
    result: dict[int, dict[str, OptionValue]] = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        index_text, sep, assignments = chunk.partition(":")
        if not sep:
            raise CompileError(f"{where}: bad per-layer options {shown(chunk)} "
                               "(expected 'LAYER:name=value,...')")
        layer = parse_layer_index(index_text, where)
        values = result.setdefault(layer, {})
        for item in filter(None, (a.strip() for a in assignments.split(","))):
            name, eq, value = item.partition("=")
            if not eq:
                raise CompileError(f"{where}: layer {layer}: bad option {shown(item)} "
                                   "(expected name=value)")
            values[python_name(name)] = convert_value(options_class, name, value,
                                                      f"{where}: layer {layer}")
    return result


def format_layer_overrides(options_class: type,
                           layers: Mapping[int, Mapping[str, OptionValue]]) -> str:
    """The inverse of `parse_layer_overrides`; every value is checked first, so the text
    holds exactly these options."""
    parts = []
    for index, values in sorted(layers.items()):
        if not values:
            continue
        if not isinstance(index, int) or not 0 <= index <= MAX_LAYER_INDEX:
            raise CompileError(f"bad layer index {index!r} (expected an integer "
                               f"0..{MAX_LAYER_INDEX})")
        items = []
        for name, value in sorted(values.items()):
            checked = convert_value(options_class, name, value, f"layer {index}")
            text = repr(checked) if isinstance(checked, float) else str(checked).lower() \
                if isinstance(checked, bool) else str(checked)
            items.append(f"{dashed(python_name(name))}={text}")
        parts.append(f"{index}:" + ",".join(items))
    return ";".join(parts)
