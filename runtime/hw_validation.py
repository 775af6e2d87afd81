"""Validating hardware TOML tables with pydantic, from the parameters' own declarations.

`table_model(cls)` turns the `param()` declarations of a config class (runtime/hw_params.py
`schema`) into nested pydantic models, one per TOML table: strict types (no bool for a
number, no float for an integer, an integer accepted for a float), each parameter's bounds
(`ge`/`le`; string lengths), finite floats, unknown keys forbidden. So the declaration stays
the one place a parameter is defined: a new `param()` field is validated with no other edit.
`validate_table` checks a parsed table and returns the values it states by dotted key; the
first pydantic error becomes one `ConfigError` line naming the key (the caller adds the file).

A table whose every value is plainly valid (`_plainly_valid`: exactly the type, finite, inside
the bounds, known keys, no quoted dotted key, no integer given for a float) is accepted
without pydantic, with the values pydantic would return; anything else, valid or not, goes
through pydantic, which decides. Importing pydantic and building the models cost every
esact-run and esact-cc 0.1-0.15 s CPU for the shipped configs (issue 16); the test compares
the two on generated tables (test/unit/runtime/test_plain_config_validation.py).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}
_KIND_PLURALS = {int: "integers", float: "numbers", str: "strings"}
_EXACT_FLOAT_INTEGERS = 1 << 53
"""Integers compared with bounds in plain Python only below this (float bounds compare exactly)."""


def _leaf_type(leaf: Any) -> Any:
    """The pydantic type of one parameter (an element's, for arrays) with its bounds."""
    from pydantic import Field

    spec = leaf.param
    if leaf.kind is str:
        element = Annotated[str, Field(min_length=spec.lo, max_length=spec.hi)]
    elif leaf.kind is float:
        element = Annotated[float, Field(ge=spec.lo, le=spec.hi, allow_inf_nan=False)]
    else:
        element = Annotated[int, Field(ge=spec.lo, le=spec.hi)]
    return list[element] if leaf.is_array else element  # TOML arrays parse as lists


@cache
def table_model(cls: type) -> type[BaseModel]:
    """The pydantic model of `cls`'s TOML document (its tables nested as models)."""
    from .hw_params import schema  # here, not at the top: hw_params imports this module

    tree: dict[str, Any] = {}
    for key, leaf in schema(cls).items():
        *path, name = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[name] = leaf
    return _model(cls.__name__, tree)


def _model(name: str, tree: Mapping[str, Any]) -> type[BaseModel]:
    from pydantic import ConfigDict, Field, create_model

    # Field names are positional, the TOML key is the alias: a key may be any TOML bare key
    # without clashing with BaseModel's own attributes.
    fields: dict[str, Any] = {}
    for k, (key, node) in enumerate(tree.items()):
        kind = _model(f"{name}.{key}", node) if isinstance(node, dict) else _leaf_type(node)
        fields[f"f{k}"] = (kind | None, Field(default=None, alias=key))
    strict = ConfigDict(extra="forbid", strict=True, populate_by_name=False)
    return create_model(name.replace(".", "_"), __config__=strict, **fields)


def validate_table(cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """The values `table` states, by full dotted key (arrays as tuples), each checked for its
    type and bounds; an unknown key or a bad value is a ConfigError naming the key."""
    plain = _plainly_valid(cls, table)
    return plain if plain is not None else validated_by_pydantic(cls, table)


def validated_by_pydantic(cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """`validate_table` by the pydantic model alone."""
    from pydantic import ValidationError

    from .hw_params import schema

    try:
        model = table_model(cls).model_validate(table)
    except ValidationError as exc:
        raise ConfigError(_message(cls, exc.errors(include_url=False)[0])) from None
    values: dict[str, Any] = {}
    _flatten(model.model_dump(by_alias=True, exclude_unset=True), "", values)
    leaves = schema(cls)
    return {k: tuple(v) if leaves[k].is_array else v for k, v in values.items()}


def _plainly_valid(cls: type, table: Any) -> dict[str, Any] | None:
    """`validate_table`'s values when every stated value is plainly valid, else None."""
    from .hw_params import schema, tables

    values: dict[str, Any] = {}
    return values if _plain_node(table, "", schema(cls), tables(cls), values) else None


def _plain_node(node: Any, prefix: str, leaves: Mapping[str, Any], table_names: frozenset[str],
                out: dict[str, Any]) -> bool:
    if type(node) is not dict:
        return False
    for key, value in node.items():
        if type(key) is not str or "." in key:  # a quoted dotted key is no nested table
            return False
        full = prefix + key
        if full in table_names:
            if not _plain_node(value, full + ".", leaves, table_names, out):
                return False
            continue
        leaf = leaves.get(full)
        if leaf is None or not _plain_value(leaf, value):
            return False
        out[full] = tuple(value) if leaf.is_array else value
    return True


def _plain_value(leaf: Any, value: Any) -> bool:
    if leaf.is_array:  # TOML arrays parse as lists
        return type(value) is list and all(_plain_element(leaf, v) for v in value)
    return _plain_element(leaf, value)


def _plain_element(leaf: Any, value: Any) -> bool:
    """Exactly of the parameter's kind (no bool, no integer for a float), finite, in bounds."""
    if type(value) is not leaf.kind:
        return False
    if leaf.kind is float and not math.isfinite(value):
        return False
    if leaf.kind is int and abs(value) >= _EXACT_FLOAT_INTEGERS:
        return False
    measure = len(value) if leaf.kind is str else value
    lo, hi = leaf.param.lo, leaf.param.hi
    return (lo is None or measure >= lo) and (hi is None or measure <= hi)


def _flatten(node: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{key}.", out)
        else:
            out[prefix + key] = value


def _message(cls: type, error: Mapping[str, Any]) -> str:
    from .hw_params import bounds_text, schema, show

    parts = [p for p in error["loc"] if isinstance(p, str)]
    key = ".".join(parts)
    kind, value = error["type"], error["input"]
    if kind == "extra_forbidden":
        return unknown_key_message(cls, key, ".".join(parts[:-1]) + "." if len(parts) > 1 else "")
    leaf = schema(cls).get(key)
    if leaf is None:  # a table given as something else
        return f"'{key}' must be a table ([{key}]), got {show(value)}"
    if kind == "list_type":
        return f"'{key}' must be an array of {_KIND_PLURALS[leaf.kind]}, got {show(value)}"
    if kind == "finite_number":
        return f"'{key}' must be a finite number, got {value}"
    if kind in ("greater_than_equal", "less_than_equal") or (
            kind == "float_type" and type(value) is int):  # an integer beyond any float
        return f"'{key}' must be within {bounds_text(leaf.param)}, got {show(value)}"
    if kind in ("string_too_short", "string_too_long"):
        return (f"'{key}' must be printable text of length {bounds_text(leaf.param)}, "
                f"got {show(value)}")
    if kind in ("int_type", "float_type", "string_type", "int_from_float", "float_parsing",
                "int_parsing"):
        return f"'{key}' must be {_KIND_NAMES[leaf.kind]}, got {show(value)}"
    return f"'{key}': {error['msg']}, got {show(value)}"


def unknown_key_message(cls: type, key: str, prefix: str) -> str:
    """`key` (under the table `prefix`) is not a parameter: the nearest valid key, if any,
    and every valid key of that table."""
    from .hw_params import schema, tables

    known = sorted(schema(cls)) + sorted(tables(cls))
    here = sorted({k[len(prefix):].split(".")[0] for k in known if k.startswith(prefix)})
    name = key[len(prefix):]
    near = [prefix + n for n in difflib.get_close_matches(name, here, n=1, cutoff=0.6)]
    if not near:  # the right name in the wrong table: `[sram] frequency_hz`
        near = [k for k in schema(cls) if k.rsplit(".", 1)[-1] == name][:1]
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    where = f"in [{prefix[:-1]}]" if prefix else "at the top level"
    return f"unknown key '{key}'{hint}; valid keys {where}: {', '.join(here)}"
