"""Energy model: per-operation and per-byte energies, technology scaling, static power.

Every constant comes from the config's `[energy]` section at its cited source node
(docs/hardware.md lists the sources); this module only derives per-event energies for
the config's node and supply and charges each instruction for the work its record says
it did (so a masked GEMM pays for the rows and keys its mask kept). Nothing here is
tuned to the ESACT paper's results.

Scaling (first order, stated in docs/hardware.md): dynamic energy ~ C V^2 with C
proportional to feature size; leakage power ~ device width * V, i.e. proportional to
node * V. DRAM energy is an off-chip interface figure (the config's `dram.technology`
preset, runtime/dram_presets.py) and is not scaled.

Two boundaries (`boundary_energies`): on-chip is what the accelerator die spends (MACs,
prediction units, SFU, SRAM, leakage), the figure accelerator papers report; system adds
what leaves the die (DRAM transfers, host segments when `host_power_w` > 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .hw_config import HardwareConfig
from .isa import BUFFER_CONFIG_ATTRS
from .work_table import BUFFERS, WorkTable

# Which config size each on-chip buffer has (HardwareConfig attribute), by short name.
BUFFER_SIZE_ATTR: dict[str, str] = {b.name.lower(): a for b, a in BUFFER_CONFIG_ATTRS.items()}

# Dynamic energy categories in reports, in display order: on the die, then off it.
ON_CHIP_CATEGORIES: tuple[str, ...] = ("mac", "bpu", "topk", "sfu",
                                       *(f"sram_{b}" for b in BUFFERS))
OFF_CHIP_CATEGORIES: tuple[str, ...] = ("dram", "host")
ENERGY_CATEGORIES: tuple[str, ...] = (*ON_CHIP_CATEGORIES, *OFF_CHIP_CATEGORIES)
BOUNDARIES: tuple[str, ...] = ("on_chip", "system")


def sram_pj_per_64bit(size_bytes: float, anchors: tuple[float, ...], pj: tuple[float, ...]) -> float:
    """CACTI-style access energy by array size: log-log interpolation of the cited anchors
    (extrapolated with the nearest segment's slope outside them)."""
    xs = [math.log(a) for a in anchors]
    ys = [math.log(e) for e in pj]
    x = math.log(size_bytes)
    k = 0
    while k < len(xs) - 2 and x > xs[k + 1]:
        k += 1
    slope = (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
    return math.exp(ys[k] + slope * (x - xs[k]))


@dataclass(frozen=True)
class EnergyModel:
    """Per-event energies (pJ) and static power (W) of one config, after scaling."""

    dynamic_scale: float
    leakage_scale: float
    mac_pj: float
    shift_add_pj: float
    compare_pj: float
    sfu_element_pj: float
    sram_read_pj_per_byte: dict[str, float]
    sram_write_pj_per_byte: dict[str, float]
    dram_technology: str
    dram_pj_per_byte: float
    host_power_w: float
    static_power_w: dict[str, float]  # by part: mac_array, bpu, topk, sfu, sram

    @property
    def total_static_power_w(self) -> float:
        return sum(self.static_power_w.values())

    @classmethod
    def from_config(cls, config: HardwareConfig) -> EnergyModel:
        e = config.energy
        dyn = (config.technology_node_nm / e.reference_node_nm) * (
            config.vdd_v / e.reference_vdd_v
        ) ** 2
        leak = (config.technology_node_nm / e.leakage_reference_node_nm) * (
            config.vdd_v / e.reference_vdd_v
        )
        read = {}
        write = {}
        for buf in BUFFERS:
            size = getattr(config, BUFFER_SIZE_ATTR[buf])
            per_byte = sram_pj_per_64bit(size, e.sram_anchor_bytes, e.sram_anchor_pj_per_64bit) / 8
            read[buf] = per_byte * dyn
            write[buf] = per_byte * dyn * e.sram_write_factor
        # An 8-bit array multiplier has (8/32)^2 of a 32-bit one's area, so of its leakage;
        # an 8-bit ripple adder 8/32 of a 32-bit adder's. Each MAC also holds a 32-bit
        # accumulator register.
        mac_leak_mw = (
            e.leak_int32_mul_mw * (8 / 32) ** 2 + e.leak_int32_add_mw + 32 * e.leak_register_bit_mw
        )
        sram_bits = 8 * sum(getattr(config, BUFFER_SIZE_ATTR[b]) for b in BUFFERS)
        static_w = {
            "mac_array": config.mac_rows * config.mac_cols * mac_leak_mw * 1e-3 * leak,
            "bpu": config.bpu_lanes * e.leak_int32_add_mw * (8 / 32) * 1e-3 * leak,
            "topk": config.topk_lanes * e.leak_int32_add_mw * 1e-3 * leak,
            "sfu": config.sfu_lanes * (e.leak_fp32_add_mw + e.leak_fp32_mul_mw) * 1e-3 * leak,
            # the assumed bitcell figure is already stated for the config's node
            "sram": sram_bits * e.sram_leak_pw_per_bit * 1e-12,
        }
        return cls(
            dynamic_scale=dyn,
            leakage_scale=leak,
            mac_pj=(e.int8_mul_pj + e.int32_add_pj) * dyn,
            shift_add_pj=e.int8_add_pj * dyn,
            compare_pj=e.int32_add_pj * dyn,
            sfu_element_pj=(e.fp32_mul_pj + e.fp32_add_pj) * dyn,
            sram_read_pj_per_byte=read,
            sram_write_pj_per_byte=write,
            dram_technology=config.dram_technology,
            dram_pj_per_byte=config.dram_pj_per_byte,
            host_power_w=e.host_power_w,
            static_power_w=static_w,
        )

    def dynamic_energy(
        self,
        work: WorkTable,
        sfu_passes: np.ndarray,
        host_cycles: np.ndarray,
        frequency_hz: float,
    ) -> dict[str, np.ndarray]:
        """Per-instruction dynamic energy (pJ) by category (ENERGY_CATEGORIES).

        Each executed MAC, shift-add and comparison is charged once; each SFU element once
        per lane pass its instruction makes (sfu_passes, e.g. 4 for softmax) as one FP32
        multiply + add; SRAM and DRAM per byte the work record says were moved.
        """
        out: dict[str, np.ndarray] = {
            "mac": work["macs_executed"] * self.mac_pj,
            "bpu": work["shift_adds"] * self.shift_add_pj,
            "topk": work["compare_ops"] * self.compare_pj,
            "sfu": work["sfu_elements"] * np.asarray(sfu_passes) * self.sfu_element_pj,
        }
        for buf in BUFFERS:
            out[f"sram_{buf}"] = (
                work[f"sram_read_{buf}"] * self.sram_read_pj_per_byte[buf]
                + work[f"sram_write_{buf}"] * self.sram_write_pj_per_byte[buf]
            )
        out["dram"] = (work["dram_read_bytes"] + work["dram_write_bytes"]) * self.dram_pj_per_byte
        out["host"] = np.asarray(host_cycles, dtype=np.float64) * (
            self.host_power_w / frequency_hz * 1e12
        )
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    def static_energy_pj(self, cycles: int, frequency_hz: float) -> float:
        return self.total_static_power_w * cycles / frequency_hz * 1e12

    def table(self) -> dict[str, float | str]:
        """The derived per-event numbers, for docs and the report."""
        row: dict[str, float | str] = {
            "dynamic_scale": self.dynamic_scale,
            "leakage_scale": self.leakage_scale,
            "mac_pj": self.mac_pj,
            "shift_add_pj": self.shift_add_pj,
            "compare_pj": self.compare_pj,
            "sfu_element_pj": self.sfu_element_pj,
            "dram_technology": self.dram_technology,
            "dram_pj_per_byte": self.dram_pj_per_byte,
            "static_power_w": self.total_static_power_w,
        }
        for buf in BUFFERS:
            row[f"sram_{buf}_read_pj_per_byte"] = self.sram_read_pj_per_byte[buf]
        return row


def boundary_energies(breakdown_pj: Mapping[str, float], static_pj: float, seconds: float,
                      macs_dense: int, macs_executed: int) -> dict[str, dict[str, float]]:
    """Energy, power and TOPS/W of a run at each boundary (BOUNDARIES): on-chip (dynamic
    energy of ON_CHIP_CATEGORIES plus leakage) and system (on-chip plus OFF_CHIP_CATEGORIES).
    TOPS/W counts 2 operations per MAC: `tops_per_watt` per dense-equivalent MAC (what the
    dense model would do, as accelerator papers count), `tops_per_watt_executed` per MAC the
    MAC array executed."""
    on_chip = sum(breakdown_pj[c] for c in ON_CHIP_CATEGORIES)
    off_chip = sum(breakdown_pj[c] for c in OFF_CHIP_CATEGORIES)
    result = {}
    for name, dynamic in (("on_chip", on_chip), ("system", on_chip + off_chip)):
        energy = dynamic + static_pj
        result[name] = {
            "energy_pj": energy,
            "dynamic_pj": dynamic,
            "static_pj": static_pj,
            "average_power_w": energy * 1e-12 / seconds if seconds > 0 else 0.0,
            "tops_per_watt": 2.0 * macs_dense / energy if energy > 0 else 0.0,
            "tops_per_watt_executed": 2.0 * macs_executed / energy if energy > 0 else 0.0,
        }
    result["system"]["off_chip_pj"] = off_chip
    return result
