"""DRAM technology presets: the energy of moving one byte between DRAM and the accelerator.

A config selects one with `dram.technology` (`HardwareConfig.dram_technology`); the energy
model charges every DMA and host byte at its figure, outside the on-chip boundary (report
`energy.system`). Each figure is a full access energy per bit (array, on-DRAM data movement
and I/O, as its source states it), times 8, and is not node-scaled: it is an off-chip
interface figure. `custom` takes `energy.dram_pj_per_byte` instead, for a figure of one's own.
docs/hardware.md repeats the sources and says why no DDR4 preset is offered.
"""

from __future__ import annotations

from dataclasses import dataclass

CUSTOM = "custom"  # the technology whose figure is `energy.dram_pj_per_byte`


@dataclass(frozen=True)
class DramPreset:
    name: str
    pj_per_bit: float
    source: str

    @property
    def pj_per_byte(self) -> float:
        return self.pj_per_bit * 8


DRAM_PRESETS: dict[str, DramPreset] = {p.name: p for p in (
    # The figure this model always used: Horowitz's 1.3 nJ per 64-bit access (low end of his
    # 1.3-2.6 nJ range), a DDR3-era interface at 45 nm. Default, so existing results stand.
    DramPreset("ddr3", 1300 / 64,
               "M. Horowitz, 'Computing's energy problem', ISSCC 2014: 1.3 nJ per 64-bit "
               "DRAM access"),
    DramPreset("lpddr4", 8.0,
               "Accelergy (Wu et al., ICCAD 2019) CACTI plug-in DRAM table, 'LPDDR4: 8 pJ/bit' "
               "(stated there as public data)"),
    DramPreset("gddr5", 14.0,
               "M. O'Connor et al., 'Fine-Grained DRAM', MICRO 2017: GDDR5 about 14 pJ/bit "
               "(also Accelergy's table)"),
    DramPreset("hbm2", 3.9,
               "M. O'Connor et al., 'Fine-Grained DRAM', MICRO 2017: HBM2 about 3.9 pJ/bit "
               "(also Accelergy's table)"),
)}

DEFAULT_DRAM_TECHNOLOGY = "ddr3"
DRAM_TECHNOLOGIES: tuple[str, ...] = (*DRAM_PRESETS, CUSTOM)
