"""A spec expanded into points, and points grouped by what must be compiled and executed.

A point is one (model, sparsity setting, hardware config, input); its id is a hash of those
parameters, so a finished point is recognised across runs (resume) whatever else the spec
lists. A group is the points sharing the model, the sparsity setting and the values of the
hardware parameters the compiler reads (retiming.PROGRAM_PARAMETERS): one compile and one
execution per input serve them all, each point is a re-timing.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.retiming import program_parameters

from .spec import ModelSpec, SweepSpec, sparsity_settings


@dataclass(frozen=True)
class Point:
    index: int  # position in the spec's expansion: the table's row order
    id: str
    params: dict[str, Any]  # table column -> value: every parameter of the point
    hardware: dict[str, Any]  # the hardware axes' values, by TOML key
    input: int


@dataclass
class Group:
    id: str
    model: ModelSpec
    sparsity: dict[str, Any]  # {"scheme": name, "options": ["name=value", ...]}
    base: dict[str, Any]  # the base hardware config as a TOML table
    points: list[Point]


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def base_table(base: str | None, spec_dir: Path, source: str) -> dict[str, Any]:
    """The base hardware config, resolved, as a TOML table (a path is relative to the spec)."""
    if base is not None and (base.endswith(".toml") or "/" in base):
        base = str(spec_dir / base)
    try:
        return resolve_config(base).to_dict()
    except ConfigError as exc:
        raise ConfigError(f"{source}: hardware.base: {exc}") from None


def hardware_config(base: dict[str, Any], values: dict[str, Any],
                    source: str = "sweep point") -> HardwareConfig:
    """`base` with each dotted TOML key of `values` set; errors start with `source`."""
    table = copy.deepcopy(base)
    for key, value in values.items():
        *tables, name = key.split(".")
        node = table
        for part in tables:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: '{key}': '{part}' is not a table")
        node[name] = value
    return HardwareConfig.from_dict(table, source)


def expand(spec: SweepSpec, spec_dir: Path, source: str) -> list[Group]:
    """Every point of the spec, grouped; points and groups in spec order (deterministic)."""
    base = base_table(spec.hardware.base, spec_dir, source)
    keys = list(spec.hardware.axes)
    combos = [dict(zip(keys, combo))
              for combo in itertools.product(*(spec.hardware.axes[k] for k in keys))]
    program_key = [digest(program_parameters(hardware_config(base, c))) for c in combos]
    groups: dict[str, Group] = {}
    count = 0
    for model in spec.models:
        for sparsity in spec.sparsity:
            for setting in sparsity_settings(sparsity):
                for combo, program in zip(combos, program_key):
                    group_id = digest([model.name, setting["options"], setting["scheme"],
                                       program])
                    group = groups.setdefault(group_id, Group(
                        group_id, model, {"scheme": setting["scheme"],
                                          "options": setting["options"]}, base, []))
                    for index in spec.sweep.inputs:
                        params = {"model": model.name, "sparsity": setting["scheme"],
                                  **{f"sparsity.{n}": v for n, v in setting["values"].items()},
                                  **combo, "input": index}
                        group.points.append(Point(count, digest(params), params, combo, index))
                        count += 1
    return list(groups.values())
