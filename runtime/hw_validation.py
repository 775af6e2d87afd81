"""Validating hardware TOML tables with pydantic, from the parameters' own declarations.

`table_model(cls)` turns the `param()` declarations of a config class (runtime/hw_params.py
`schema`) into nested pydantic models, one per TOML table: strict types (no bool for a
number, no float for an integer, an integer accepted for a float), each parameter's bounds
(`ge`/`le`; string lengths), finite floats, unknown keys forbidden. So the declaration stays
the one place a parameter is defined: a new `param()` field is validated with no other edit.
`validate_table` checks a parsed table and returns the values it states by dotted key; the
first pydantic error becomes one `ConfigError` line naming the key (the caller adds the file).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}
_KIND_PLURALS = {int: "integers", float: "numbers", str: "strings"}
_STRICT = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


def _leaf_type(leaf: Any) -> Any:
    """The pydantic type of one parameter (an element's, for arrays) with its bounds."""
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
    # Field names are positional, the TOML key is the alias: a key may be any TOML bare key
    # without clashing with BaseModel's own attributes.
    fields: dict[str, Any] = {}
    for k, (key, node) in enumerate(tree.items()):
        kind = _model(f"{name}.{key}", node) if isinstance(node, dict) else _leaf_type(node)
        fields[f"f{k}"] = (kind | None, Field(default=None, alias=key))
    return create_model(name.replace(".", "_"), __config__=_STRICT, **fields)


def validate_table(cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """The values `table` states, by full dotted key (arrays as tuples), each checked for its
    type and bounds; an unknown key or a bad value is a ConfigError naming the key."""
    from .hw_params import schema

    try:
        model = table_model(cls).model_validate(table)
    except ValidationError as exc:
        raise ConfigError(_message(cls, exc.errors(include_url=False)[0])) from None
    values: dict[str, Any] = {}
    _flatten(model.model_dump(by_alias=True, exclude_unset=True), "", values)
    leaves = schema(cls)
    return {k: tuple(v) if leaves[k].is_array else v for k, v in values.items()}


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
