"""Declaring hardware parameters: a dataclass field with its TOML key, range and meaning.

A parameter is declared once, as a field of a frozen dataclass made with
`param(default, key, lo, hi, doc)`; a group of parameters kept in its own dataclass (the
`[energy]` constants) is nested with `section(cls, key)`. Everything else derives from those
declarations: which TOML keys exist and their types (`schema`), the pydantic model that
validates a parsed TOML table or a constructed config (runtime/hw_validation.py: types,
bounds, finite numbers, unknown keys named with the nearest valid one; `values_from_table`,
`check_ranges`), the resolved TOML-shaped dict a config hashes (`to_table`, `hashed_table`)
and its commented TOML text (`to_toml`). Errors are `ConfigError`s naming the key; the
caller adds the file.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

from .errors import ConfigError
from .hw_validation import validate_table

PARAM = "esact.param"
SECTION = "esact.section"


@dataclass(frozen=True)
class Param:
    """Where a parameter sits in a TOML file and which values it accepts (bounds inclusive)."""

    key: str  # dotted, relative to the dataclass declaring it: "sram.weight_buffer"
    lo: float | None
    hi: float | None
    doc: str
    hashed_at_default: bool = True


def param(default: Any, key: str, lo: float | None = None, hi: float | None = None,
          doc: str = "", hashed_at_default: bool = True) -> Any:
    """A parameter field: `default` when a config does not state `key`. For strings the
    bounds are on the length; for arrays, on every element. A parameter added after binaries
    were recorded passes `hashed_at_default=False`: at its default it is left out of the hash
    (`hashed_table`), so every existing config keeps its hash and its binaries stay valid."""
    return dataclasses.field(default=default,
                             metadata={PARAM: Param(key, lo, hi, doc, hashed_at_default)})


def section(cls: type, key: str) -> Any:
    """A nested group of parameters, the TOML table `[key]`."""
    return dataclasses.field(default_factory=cls, metadata={SECTION: key})


@dataclass(frozen=True)
class Leaf:
    """One parameter as the schema of a top-level config class sees it."""

    key: str  # full dotted TOML key: "energy.int8_mul_pj"
    attrs: tuple[str, ...]  # attribute path from the top-level config: ("energy", "int8_mul_pj")
    kind: type  # int, float or str (of the elements, for an array)
    is_array: bool
    param: Param


@cache
def schema(cls: type) -> Mapping[str, Leaf]:
    """Every parameter of `cls` (nested sections included), by full TOML key."""
    leaves: dict[str, Leaf] = {}
    _collect_leaves(cls, "", (), leaves)
    return MappingProxyType(leaves)


def _collect_leaves(cls: type, prefix: str, attrs: tuple[str, ...],
                    leaves: dict[str, Leaf]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if SECTION in f.metadata:
            _collect_leaves(hints[f.name], f"{prefix}{f.metadata[SECTION]}.", (*attrs, f.name),
                            leaves)
            continue
        if PARAM not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is neither a param() nor a section()")
        spec: Param = f.metadata[PARAM]
        kind, is_array = hints[f.name], False
        if typing.get_origin(kind) is tuple:  # tuple[int, ...]: a TOML array
            kind, is_array = typing.get_args(kind)[0], True
        if kind not in (int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: parameters are int, float, str or tuples")
        if prefix + spec.key in leaves:
            raise TypeError(f"{cls.__name__}.{f.name}: TOML key '{prefix + spec.key}' is taken")
        leaves[prefix + spec.key] = Leaf(prefix + spec.key, (*attrs, f.name), kind, is_array, spec)


@cache
def tables(cls: type) -> frozenset[str]:
    """The dotted names of the TOML tables `cls` has ("sram", "energy", ...)."""
    return frozenset(".".join(key.split(".")[:n]) for key in schema(cls)
                     for n in range(1, key.count(".") + 1))


def values_from_table(cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """The values a parsed TOML table states, by full key, each checked for its type and
    bounds by the pydantic model of `cls` (runtime/hw_validation.py)."""
    return validate_table(cls, table)


def integers_to_floats(config: Any) -> None:
    """Make an integer given for a float parameter a float, in place (the config is still
    being constructed): `frequency_hz = 1000000000` is the config `1.0e9` is, hash included."""
    for leaf in schema(type(config)).values():
        value = get(config, leaf)
        if leaf.kind is not float or not any(type(v) is int for v in
                                             (value if leaf.is_array else (value,))):
            continue
        try:
            value = tuple(map(float, value)) if leaf.is_array else float(value)
        except OverflowError:
            raise ConfigError(f"'{leaf.key}' must be within {bounds_text(leaf.param)}, "
                              f"got {show(value)}") from None
        owner = config
        for attr in leaf.attrs[:-1]:
            owner = getattr(owner, attr)
        object.__setattr__(owner, leaf.attrs[-1], value)


def check_ranges(config: Any) -> None:
    """Every parameter of `config` has its type, is finite and within its declared bounds
    (the same pydantic model as a TOML file's), and every string is printable."""
    validate_table(type(config), to_table(config))
    for leaf in schema(type(config)).values():
        value = get(config, leaf)
        if leaf.kind is str and not all(v.isprintable() for v in
                                        (value if leaf.is_array else (value,))):
            raise ConfigError(f"'{leaf.key}' must be printable text of length "
                              f"{bounds_text(leaf.param)}, got {show(value)}")


def bounds_text(spec: Param) -> str:
    """A parameter's bounds as an interval: [1, 65535], [0, inf]."""
    lo = "-inf" if spec.lo is None else _number(spec.lo)
    hi = "inf" if spec.hi is None else _number(spec.hi)
    return f"[{lo}, {hi}]"


def _number(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def show(value: Any) -> str:
    """A value as an error message shows it: repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def get(config: Any, leaf: Leaf) -> Any:
    """The value of one parameter in a config."""
    for attr in leaf.attrs:
        config = getattr(config, attr)
    return config


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of `cls` with `values` (by full key) over its defaults; nested sections
    are built first, so the top-level class validates the finished config once."""
    return _build(cls, (), {schema(cls)[k].attrs: v for k, v in values.items()})


def _build(cls: type, attrs: tuple[str, ...], by_attrs: Mapping[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = (*attrs, f.name)
        if SECTION in f.metadata:
            if any(a[:len(path)] == path for a in by_attrs):
                kwargs[f.name] = _build(hints[f.name], path, by_attrs)
        elif path in by_attrs:
            kwargs[f.name] = by_attrs[path]
    return cls(**kwargs)


def to_table(config: Any) -> dict[str, Any]:
    """The fully resolved config as a TOML-shaped dict (arrays as lists): what a file stating
    every parameter would parse to."""
    table: dict[str, Any] = {}
    for leaf in schema(type(config)).values():
        *tables_, name = leaf.key.split(".")
        node = table
        for t in tables_:
            node = node.setdefault(t, {})
        value = get(config, leaf)
        node[name] = list(value) if leaf.is_array else value
    return table


def hashed_table(config: Any) -> dict[str, Any]:
    """`to_table` without the parameters declared `hashed_at_default=False` that are at
    their default: what a config's hash covers."""
    table = to_table(config)
    defaults = _defaults(type(config))
    for leaf in schema(type(config)).values():
        if not leaf.param.hashed_at_default and get(config, leaf) == defaults[leaf.key]:
            *tables_, name = leaf.key.split(".")
            path = [table]
            for t in tables_:
                path.append(path[-1][t])
            del path[-1][name]
            for parent, t, node in zip(path[-2::-1], tables_[::-1], path[:0:-1]):
                if not node:  # a table holding only such parameters goes too
                    del parent[t]
    return table


@cache
def _defaults(cls: type) -> Mapping[str, Any]:
    """Every parameter's default, by full key (nested sections built with their defaults)."""
    return MappingProxyType({key: _field_default(cls, leaf.attrs)
                             for key, leaf in schema(cls).items()})


def _field_default(cls: type, attrs: tuple[str, ...]) -> Any:
    for attr in attrs[:-1]:
        cls = typing.get_type_hints(cls)[attr]
    field = next(f for f in dataclasses.fields(cls) if f.name == attrs[-1])
    return field.default


def key_of(cls: type, attr: str) -> str:
    """The TOML key of a top-level attribute (`weight_buffer_bytes` -> `sram.weight_buffer`)."""
    return next(leaf.key for leaf in schema(cls).values() if leaf.attrs == (attr,))


def to_toml(config: Any) -> str:
    """The fully resolved config as TOML text, each value commented with its meaning: what a
    design point would look like if it stated everything (`from_toml` reads it back)."""
    by_table: dict[str, list[Leaf]] = {"": []}  # top-level keys must precede any [table]
    for leaf in schema(type(config)).values():
        by_table.setdefault(leaf.key.rpartition(".")[0], []).append(leaf)
    lines = []
    for table, leaves in by_table.items():
        if table:
            lines += ["", f"[{table}]"]
        for leaf in leaves:
            value = get(config, leaf)
            text = ("[" + ", ".join(map(_toml_scalar, value)) + "]" if leaf.is_array
                    else _toml_scalar(value))
            lines.append(f"{leaf.key.rpartition('.')[2]} = {text}  # {leaf.param.doc}")
    return "\n".join(lines) + "\n"


def _toml_scalar(value: int | float | str) -> str:
    # JSON strings are TOML basic strings; repr of a finite float is a TOML float.
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
