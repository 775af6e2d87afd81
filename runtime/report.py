"""Run reports: the JSON document and the readable summary table of one simulated run.

`build_report` joins the schedule (timing.py), the work columns (work_table.py) and the
energy model (energy.py) with each instruction's debug entry (ONNX node, layer,
component) into one JSON-ready dict:

  total.{cycles, seconds, macs_dense, macs_executed, mac_reduction, effective_tops,
         dram_bytes}
  energy.{dram_technology, dram_pj_per_byte,
          on_chip.{energy_pj, dynamic_pj, static_pj, average_power_w, tops_per_watt,
                   tops_per_watt_executed},
          system.{the same, off_chip_pj}, breakdown_pj.<category>, constants}
  roofline_cycles, roofline.{bound_by, units}
  units.<queue>.{instructions, busy_cycles, utilisation, stalls.<cause>}
  components.<name>.{instructions, macs_dense, macs_executed, mac_reduction, cycles,
                     energy_on_chip_pj, energy_system_pj, mask.{rows_total, rows_kept,
                     elements_total, elements_kept, ...}, layers.<layer>.{same}}
  layers.<layer>.{same as a component row}

`cycles` of a component is the busy time of its instructions on their units (they may
overlap in time with other units'). Energy is given at two boundaries (energy.py
`boundary_energies`): on-chip (the die: MACs, prediction units, SFU, SRAM, leakage) and
system (plus DRAM and host); a component's energies are its instructions' dynamic energy.
TOPS/W counts 2 operations per MAC: dense-equivalent (`tops_per_watt`, as accelerator papers
do) and executed (`tops_per_watt_executed`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_write import atomic_write_text
from .energy import ENERGY_CATEGORIES, ON_CHIP_CATEGORIES, EnergyModel, boundary_energies
from .hw_config import HardwareConfig
from .spls_summary import spls_summary
from .summary_tables import NO_LAYER, render_text
from .timing import DMA_QUEUES, QUEUE_NAMES, Schedule, roofline
from .work_table import WorkTable, sfu_passes_column

# Components a binary's debug map may name (ISA_PLAN.md), in report order.
COMPONENTS: tuple[str, ...] = (
    "q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2", "head", "proj", "predict", "sfu", "host",
    "load", "store",
)
# The component of an instruction without a debug entry: by its queue.
QUEUE_COMPONENT: dict[str, str] = {
    "load": "load", "compute": "other", "predict": "predict", "sfu": "sfu",
    "store": "store", "host": "host",
}


@dataclass
class InstructionInfo:
    """Per-instruction names for reports and traces (from the binary's text and debug map)."""

    opcodes: list[str]
    queues: list[int]
    units: list[str]  # isa.Unit values: dma, mac, bpu, topk, sfu, host, control
    nodes: list[str]
    layers: list[int | None]
    components: list[str]
    instructions: Sequence[Any] = ()  # the program's, for footprints (trace occupancy)

    def __len__(self) -> int:
        return len(self.opcodes)


def instruction_info(program: Any) -> InstructionInfo:
    """Names of each instruction of an esb.Program: opcode, queue, unit, and from the debug
    map its ONNX node, layer and component (by queue when the map has no entry)."""
    from .isa import INSTRUCTION_SPECS

    opcodes, queues, units, nodes, layers, components = [], [], [], [], [], []
    debug = program.debug
    for i, instr in enumerate(program.instructions):
        spec = INSTRUCTION_SPECS[instr.opcode_name]
        q = int(spec.queue)
        entry = debug.get(i)
        opcodes.append(instr.opcode_name)
        queues.append(q)
        units.append(spec.unit.value)
        if entry is not None:
            nodes.append(entry.node)
            layers.append(entry.layer if entry.layer >= 0 else None)
            components.append(entry.component)
        else:
            nodes.append("")
            layers.append(None)
            components.append(QUEUE_COMPONENT[QUEUE_NAMES[q]])
    return InstructionInfo(opcodes, queues, units, nodes, layers, components,
                           program.instructions)


@dataclass
class RunCosts:
    """Per-instruction energies of a scheduled run (pJ)."""

    dynamic_by_category: dict[str, np.ndarray]
    dynamic: np.ndarray  # system boundary: every category
    dynamic_on_chip: np.ndarray  # on-chip boundary: ON_CHIP_CATEGORIES
    static_pj: float


def run_costs(
    info: InstructionInfo,
    schedule: Schedule,
    work: WorkTable,
    energy: EnergyModel,
    config: HardwareConfig,
) -> RunCosts:
    cycles = np.asarray(schedule.cycles, dtype=np.int64)
    host_cycles = np.where(np.asarray(info.units, dtype=object) == "host", cycles, 0)
    by_cat = energy.dynamic_energy(
        work, sfu_passes_column(info.opcodes), host_cycles, config.frequency_hz
    )
    on_chip = np.zeros(work.n, dtype=np.float64)
    for category in ON_CHIP_CATEGORIES:
        on_chip += by_cat[category]
    dynamic = on_chip.copy()
    for category, values in by_cat.items():
        if category not in ON_CHIP_CATEGORIES:
            dynamic += values
    return RunCosts(by_cat, dynamic, on_chip,
                    energy.static_energy_pj(schedule.total_cycles, config.frequency_hz))


def unit_work_totals(
    info: InstructionInfo, schedule: Schedule, work: WorkTable
) -> dict[str, float]:
    """Each hardware unit's total work, the input of timing.roofline."""
    units = np.asarray(info.units, dtype=object)
    queues = np.asarray(info.queues, dtype=np.int64)
    dma = np.isin(queues, [schedule.queue_names.index(q) for q in DMA_QUEUES])
    passes = sfu_passes_column(info.opcodes)
    cycles = np.asarray(schedule.cycles, dtype=np.int64)
    return {
        "mac_array": float(work["macs_executed"][units == "mac"].sum()),
        "bpu": float((work["shift_adds"] + work["sfu_elements"])[units == "bpu"].sum()),
        "topk": float(work["compare_ops"][units == "topk"].sum()),
        "sfu": float((work["sfu_elements"] * passes)[units == "sfu"].sum()),
        "dram": float((work["dram_read_bytes"] + work["dram_write_bytes"])[dma].sum()),
        "host": float(cycles[units == "host"].sum()),
    }


def _row(mask: np.ndarray, work: WorkTable, cycles: np.ndarray, costs: RunCosts) -> dict[str, Any]:
    dense = int(work["macs_dense"][mask].sum())
    executed = int(work["macs_executed"][mask].sum())
    rows_total = int(work["rows_total"][mask].sum())
    rows_kept = int(work["rows_executed"][mask].sum())
    elements_total = int(work["mask_total"][mask].sum())
    elements_kept = int(work["mask_kept"][mask].sum())
    return {
        "instructions": int(mask.sum()),
        "macs_dense": dense,
        "macs_executed": executed,
        "mac_reduction": (1.0 - executed / dense) if dense else 0.0,
        "cycles": int(cycles[mask].sum()),
        "energy_on_chip_pj": float(costs.dynamic_on_chip[mask].sum()),
        "energy_system_pj": float(costs.dynamic[mask].sum()),
        "mask": {
            "rows_total": rows_total,
            "rows_kept": rows_kept,
            "rows_kept_fraction": rows_kept / rows_total if rows_total else 1.0,
            "elements_total": elements_total,
            "elements_kept": elements_kept,
            "elements_kept_fraction": elements_kept / elements_total if elements_total else 1.0,
        },
    }


def build_report(
    info: InstructionInfo,
    schedule: Schedule,
    work: WorkTable,
    energy: EnergyModel,
    config: HardwareConfig,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready report of one run (see the module docstring for its layout)."""
    costs = run_costs(info, schedule, work, energy, config)
    cycles = np.asarray(schedule.cycles, dtype=np.int64)
    total_cycles = schedule.total_cycles
    seconds = total_cycles / config.frequency_hz
    # MAC-array work only: a BPU instruction records its HLog products as `macs_dense` (the
    # prediction's size), which is not work of the model the dense baseline would do.
    on_mac_array = np.asarray(info.units, dtype=object) == "mac"
    macs_dense = int(work["macs_dense"][on_mac_array].sum())
    macs_executed = int(work["macs_executed"][on_mac_array].sum())
    bound = roofline(unit_work_totals(info, schedule, work), config)

    units = {}
    for q, name in enumerate(schedule.queue_names):
        busy = schedule.busy_cycles[name]
        units[name] = {
            "instructions": schedule.instruction_counts[name],
            "busy_cycles": busy,
            "utilisation": busy / total_cycles if total_cycles else 0.0,
            "stalls": dict(sorted(schedule.stall_cycles[name].items())),
            "stall_cycles": sum(schedule.stall_cycles[name].values()),
        }
    units["compute"]["mac_utilisation"] = (
        macs_executed / (total_cycles * config.mac_rows * config.mac_cols) if total_cycles else 0.0
    )

    layer_keys = [NO_LAYER if layer is None else str(layer) for layer in info.layers]
    present = list(COMPONENTS) + sorted(set(info.components) - set(COMPONENTS))
    all_layers = sorted(set(layer_keys), key=_layer_sort_key)
    # Integer codes per instruction: masks by integer compares, not object-array ones.
    component_codes = _codes(info.components, present)
    layer_codes = _codes(layer_keys, all_layers)
    layer_masks = [layer_codes == i for i in range(len(all_layers))]
    components: dict[str, Any] = {}
    for c, comp in enumerate(present):
        cmask = component_codes == c
        row = _row(cmask, work, cycles, costs)
        row["layers"] = {}
        for layer, layer_mask in zip(all_layers, layer_masks):
            both = cmask & layer_mask
            if both.any():
                row["layers"][layer] = _row(both, work, cycles, costs)
        components[comp] = row
    layers = {layer: _row(mask, work, cycles, costs)
              for layer, mask in zip(all_layers, layer_masks)}

    spls = spls_summary(info.opcodes, info.queues, info.units, info.components, info.layers,
                        work, cycles, costs.dynamic_on_chip, costs.dynamic,
                        schedule.queue_names.index("predict"))

    breakdown = {cat: float(costs.dynamic_by_category[cat].sum()) for cat in ENERGY_CATEGORIES}
    breakdown["static"] = costs.static_pj

    return {
        "meta": {
            **(meta or {}),
            "config": config.name,
            "config_hash": config.hash,
            "frequency_hz": config.frequency_hz,
            "instructions": len(info),
        },
        "total": {
            "cycles": int(total_cycles),
            "seconds": seconds,
            "macs_dense": macs_dense,
            "macs_executed": macs_executed,
            "mac_reduction": (1.0 - macs_executed / macs_dense) if macs_dense else 0.0,
            "effective_tops": (2.0 * macs_dense / seconds / 1e12) if seconds > 0 else 0.0,
            "dram_bytes": int(work["dram_read_bytes"].sum() + work["dram_write_bytes"].sum()),
        },
        "energy": {
            "dram_technology": energy.dram_technology,
            "dram_pj_per_byte": energy.dram_pj_per_byte,
            **boundary_energies(breakdown, costs.static_pj, seconds, macs_dense, macs_executed),
            "breakdown_pj": breakdown,
            "constants": energy.table(),
        },
        "roofline_cycles": bound["cycles"],
        "roofline": bound,
        "units": units,
        "components": components,
        "layers": layers,
        **({"spls": spls} if spls is not None else {}),  # SPLS programs (runtime/spls_summary.py)
    }


def _codes(keys: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Each key's index in `names` (every key is one of them)."""
    index = {name: i for i, name in enumerate(names)}
    return np.fromiter((index[key] for key in keys), dtype=np.int64, count=len(keys))


def _layer_sort_key(key: str) -> tuple[int, int]:
    return (1, 0) if key == NO_LAYER else (0, int(key))


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=False) + "\n")


def format_summary(report: dict[str, Any]) -> str:
    """A readable summary of a report (stdout of esact-run): runtime/summary_tables.py."""
    return render_text(report)
