"""A hardware table accepted without pydantic (hw_validation._plainly_valid) gives exactly the
values pydantic gives, and every other table is pydantic's to judge: on generated tables
(values at, inside and beyond the bounds, wrong kinds, bools, integers for floats, inf and
NaN, unknown and quoted dotted keys, tables given as values) validate_table and the pydantic
model alone return the same values or the same one-line error. The shipped configs load
without importing pydantic."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.hw_params import schema, to_table
from esact_cc.runtime.hw_validation import validate_table, validated_by_pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

LEAVES = list(schema(HardwareConfig).values())


def element(leaf: Any) -> st.SearchStrategy[Any]:
    lo, hi = leaf.param.lo, leaf.param.hi
    odd = st.sampled_from([True, None, "x", 1.5, 2, -1, math.inf, math.nan, 1 << 60, [1]])
    if leaf.kind is str:
        return st.one_of(st.text(max_size=25), odd)
    bounds = [b for b in (lo, hi) if b is not None]
    near = st.sampled_from(bounds + [b + d for b in bounds for d in (-1, 1)] + [0])
    low, high = (lo if lo is not None else -1e9), (hi if hi is not None else 1e18)
    if leaf.kind is int:
        inside = st.integers(math.ceil(low), math.floor(min(high, 1 << 62)))
        return st.one_of(inside, inside, st.integers(-10, 1 << 33), near.map(int), odd)
    inside = st.floats(low, high)
    return st.one_of(inside, inside, st.floats(allow_nan=True, allow_infinity=True),
                     near.map(float), near, odd)


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    table = to_table(HardwareConfig()) if draw(st.booleans()) else {}
    for leaf in draw(st.lists(st.sampled_from(LEAVES), max_size=4)):
        *path, name = leaf.key.split(".")
        node = table
        for part in path:
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            continue
        value = draw(element(leaf))
        if leaf.is_array:
            value = draw(st.sampled_from([[value], [], [value, value], (value,), value]))
        node[name] = value
    extra = draw(st.sampled_from([None, ("bogus", 1), ("sram.weight_buffer", 4096),
                                  ("sram", 5), ("mac_array", {"rows": 8, "nope": 1})]))
    if extra is not None:
        table[extra[0]] = extra[1]
    return table


def outcome(validate: Any, table: dict[str, Any]) -> Any:
    try:
        return validate(HardwareConfig, table)
    except ConfigError as exc:
        return f"error: {exc}"


@settings(max_examples=400, deadline=None)
@given(tables())
def test_plain_validation_agrees_with_pydantic(table: dict[str, Any]) -> None:
    got, want = outcome(validate_table, table), outcome(validated_by_pydantic, table)
    assert got == want
    if isinstance(got, dict):  # the same objects' types too (1 is not 1.0 for the hash)
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}


def test_every_shipped_config_loads_without_pydantic() -> None:
    code = ("import sys\n"
            "from esact_cc.runtime.hw_config import CONFIGS_DIR, load_config\n"
            "hashes = [load_config(p).hash for p in sorted(CONFIGS_DIR.glob('*.toml'))]\n"
            "assert len(hashes) >= 2\n"
            "print('pydantic' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
