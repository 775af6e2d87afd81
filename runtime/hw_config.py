"""Hardware configuration: the one class holding every hardware number, with its default.

`HardwareConfig` declares each parameter once (runtime/hw_params.py): its default (the
reference hardware of docs/design.md section 4), its TOML key, its range and what it means;
`validate` states every invariant and runs on every construction. A TOML file (a design
point) states only what differs from the defaults: `configs/default.toml` states nothing.
An unknown key, a wrong type, a non-finite or out-of-range value is a one-line `ConfigError`
naming the file and the key. Each binary stores `config_hash(config)`, the SHA-256 of the
fully resolved config, so running it under another config is detected. docs/hardware.md
cites the source of every value.

Adding a parameter is one edit: a `param(...)` field below (or in `EnergyConstants`).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bounded_read import CONFIG_FILE_CAP, read_bounded_text
from .dram_presets import (CUSTOM, DEFAULT_DRAM_TECHNOLOGY, DRAM_PRESETS, DRAM_TECHNOLOGIES)
from .errors import ConfigError, UsageError
from .hw_params import (build, check_ranges, hashed_table, integers_to_floats, key_of, param,
                        section, to_table, to_toml, values_from_table)
from .isa_costs import BPU_SCORE_RANKINGS, MAC_DATAFLOWS
from .isa import BUFFER_CONFIG_ATTRS, BUFFER_DTYPES, DIM_BITS, DRAM_ADDR_BITS, SRAM_ADDR_BITS

CONFIGS_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.toml"

# Plausibility bounds (inclusive) for values the ISA does not limit: wide enough for any
# design study, narrow enough that every cycle, time and energy figure stays finite.
MAX_LANES = 1 << 20
MAX_CYCLES = 1 << 20
MAX_PJ = 1.0e6  # per operation or byte: 1 uJ
MAX_MW = 1.0e6  # leakage per instance
NODE_NM = (1.0, 1000.0)
VDD_V = (0.05, 5.0)


@dataclass(frozen=True)
class EnergyConstants:
    """The `[energy]` table: constants exactly as cited, at their source's node and voltage
    (`runtime/energy.py` scales them); docs/hardware.md gives every source."""

    reference_node_nm: float = param(45.0, "reference_node_nm", *NODE_NM,
                                     doc="Horowitz, ISSCC 2014: figures at 45 nm")
    reference_vdd_v: float = param(0.9, "reference_vdd_v", *VDD_V,
                                   doc="Horowitz, ISSCC 2014: figures at 0.9 V")
    int8_mul_pj: float = param(0.2, "int8_mul_pj", 0.0, MAX_PJ,
                               doc="Horowitz 2014: 8-bit integer multiply")
    int32_add_pj: float = param(0.1, "int32_add_pj", 0.0, MAX_PJ,
                                doc="Horowitz 2014: 32-bit integer add (accumulate, compare)")
    int8_add_pj: float = param(0.03, "int8_add_pj", 0.0, MAX_PJ,
                               doc="Horowitz 2014: 8-bit integer add (one BPU shift-add)")
    fp32_add_pj: float = param(0.9, "fp32_add_pj", 0.0, MAX_PJ,
                               doc="Horowitz 2014: 32-bit float add")
    fp32_mul_pj: float = param(3.7, "fp32_mul_pj", 0.0, MAX_PJ,
                               doc="Horowitz 2014: 32-bit float multiply")
    sram_anchor_bytes: tuple[int, ...] = param(
        (8192, 32768, 1048576), "sram_anchor_bytes", 1, 1 << 40,
        doc="Horowitz 2014: array sizes of the cache access energies below")
    sram_anchor_pj_per_64bit: tuple[float, ...] = param(
        (10.0, 20.0, 100.0), "sram_anchor_pj_per_64bit", 1e-9, MAX_PJ,
        doc="Horowitz 2014: 64-bit access energy at each anchor size (log-log interpolated)")
    sram_write_factor: float = param(1.0, "sram_write_factor", 0.0, 100.0,
                                     doc="assumption: write = read energy")
    dram_pj_per_byte: float = param(DRAM_PRESETS[DEFAULT_DRAM_TECHNOLOGY].pj_per_byte,
                                    "dram_pj_per_byte", 0.0, MAX_PJ,
                                    doc="DRAM energy per byte with dram.technology = \"custom\"; "
                                        "not scaled")
    leakage_reference_node_nm: float = param(40.0, "leakage_reference_node_nm", *NODE_NM,
                                             doc="Aladdin (ISCA 2014) 40 nm characterisation")
    leak_int32_mul_mw: float = param(0.0779, "leak_int32_mul_mw", 0.0, MAX_MW,
                                     doc="Aladdin 40 nm: 32-bit multiplier leakage")
    leak_int32_add_mw: float = param(0.00225, "leak_int32_add_mw", 0.0, MAX_MW,
                                     doc="Aladdin 40 nm: 32-bit adder leakage")
    leak_register_bit_mw: float = param(0.000074, "leak_register_bit_mw", 0.0, MAX_MW,
                                        doc="Aladdin 40 nm: register leakage per bit")
    leak_fp32_add_mw: float = param(0.0531, "leak_fp32_add_mw", 0.0, MAX_MW,
                                    doc="Aladdin 40 nm: FP32 adder leakage")
    leak_fp32_mul_mw: float = param(0.120, "leak_fp32_mul_mw", 0.0, MAX_MW,
                                    doc="Aladdin 40 nm: FP32 multiplier leakage")
    sram_leak_pw_per_bit: float = param(50.0, "sram_leak_pw_per_bit", 0.0, MAX_MW,
                                        doc="ASSUMPTION: 28 nm bitcell leakage, order of magnitude")
    host_power_w: float = param(0.0, "host_power_w", 0.0, 1.0e4,
                                doc="host segments are timed, not charged (> 0 charges them)")


@dataclass(frozen=True)
class HardwareConfig:
    """The hardware: every parameter with its default; construction validates (`validate`)."""

    name: str = param("esact-default", "name", 1, 100, doc="reports and traces show it")
    technology_node_nm: float = param(28.0, "technology.node_nm", *NODE_NM,
                                      doc="assumption: 28 nm-class (ESACT's node is not public)")
    vdd_v: float = param(0.9, "technology.vdd_v", *VDD_V, doc="assumption: nominal core supply")
    frequency_hz: float = param(1.0e9, "clock.frequency_hz", 1.0e6, 1.0e11,
                                doc="assumption, docs/design.md section 4")
    mac_rows: int = param(32, "mac_array.rows", 1, (1 << DIM_BITS) - 1,
                          doc="INT8 MAC array rows (no operand has more than 2^16 - 1)")
    mac_cols: int = param(32, "mac_array.cols", 1, (1 << DIM_BITS) - 1,
                          doc="INT8 MAC array columns, INT32 accumulation")
    mac_dataflow: str = param(
        "output_stationary", "mac_array.dataflow", 1, 40, hashed_at_default=False,
        doc=f"GEMM dataflow (runtime/isa_costs.py, docs/hardware.md): {', '.join(MAC_DATAFLOWS)}")
    bpu_lanes: int = param(512, "bpu.lanes", 1, MAX_LANES,
                           doc="assumption: shift-add lanes of the bit-level prediction unit")
    bpu_score_ranking: str = param(
        "pipelined", "bpu.score_ranking", 1, 20, hashed_at_default=False,
        doc="BPU_SCORES: each row's products stream into the top-k unit (pipelined) or the "
            "ranking starts after the chunk's last product (serial); runtime/isa_costs.py")
    topk_lanes: int = param(64, "topk.lanes", 1, MAX_LANES,
                            doc="assumption: comparisons per cycle of the top-k/similarity unit")
    sfu_lanes: int = param(64, "sfu.lanes", 1, MAX_LANES,
                           doc="FP32 lanes: softmax, layer norm, GELU, requantize, residual add")
    # SRAM sizes in bytes; `validate` bounds each by what the ISA's address field reaches.
    weight_buffer_bytes: int = param(1 << 20, "sram.weight_buffer", 1, doc="INT8 weights")
    activation_buffer_bytes: int = param(1 << 19, "sram.activation_buffer", 1,
                                         doc="INT8 activations")
    accumulator_buffer_bytes: int = param(1 << 19, "sram.accumulator_buffer", 1,
                                          doc="INT32 accumulators")
    vector_buffer_bytes: int = param(1 << 20, "sram.vector_buffer", 1,
                                     doc="FP32 SFU operands (residual stream, softmax rows)")
    mask_buffer_bytes: int = param(1 << 16, "sram.mask_buffer", 1,
                                   doc="prediction masks and reuse maps")
    dram_bandwidth_bytes_per_s: float = param(
        64.0e9, "dram.bandwidth_bytes_per_s", 1.0e6, 1.0e15,
        doc="docs/design.md section 4; load and store DMA share it")
    dram_latency_cycles: int = param(100, "dram.latency_cycles", 1, MAX_CYCLES,
                                     doc="assumption: fixed access latency")
    dram_capacity_bytes: int = param(1 << 31, "dram.capacity_bytes", 1, 1 << DRAM_ADDR_BITS,
                                     doc="address space a binary may use (ISA: 32-bit addresses)")
    dram_technology: str = param(
        DEFAULT_DRAM_TECHNOLOGY, "dram.technology", 1, 20, hashed_at_default=False,
        doc=f"DRAM energy preset (runtime/dram_presets.py): {', '.join(DRAM_TECHNOLOGIES)}")
    token_latency_cycles: int = param(1, "tokens.latency_cycles", 1, MAX_CYCLES,
                                      doc="cycles from a token push to the matching pop seeing it")
    energy: EnergyConstants = section(EnergyConstants, "energy")

    def __post_init__(self) -> None:
        integers_to_floats(self)
        self.validate()

    def validate(self) -> None:
        """Every invariant of a config (a subclass adding parameters extends this)."""
        check_ranges(self)
        for buf, attr in BUFFER_CONFIG_ATTRS.items():
            size, itemsize = getattr(self, attr), BUFFER_DTYPES[buf].itemsize
            limit = (1 << SRAM_ADDR_BITS) * itemsize
            key = key_of(type(self), attr)
            if size > limit:
                raise ConfigError(
                    f"'{key}' must be at most {limit} bytes (2^{SRAM_ADDR_BITS} "
                    f"{BUFFER_DTYPES[buf]} elements, what the ISA's {buf.name} address field "
                    f"reaches), got {size}")
            if size % itemsize:
                raise ConfigError(f"'{key}' must be a multiple of {itemsize} bytes (whole "
                                  f"{BUFFER_DTYPES[buf]} elements), got {size}")
        if self.mac_dataflow not in MAC_DATAFLOWS:
            raise ConfigError(f"'mac_array.dataflow' must be one of {', '.join(MAC_DATAFLOWS)}, "
                              f"got {self.mac_dataflow!r}")
        if self.bpu_score_ranking not in BPU_SCORE_RANKINGS:
            raise ConfigError(f"'bpu.score_ranking' must be one of {', '.join(BPU_SCORE_RANKINGS)}"
                              f", got {self.bpu_score_ranking!r}")
        if self.dram_technology not in DRAM_TECHNOLOGIES:
            raise ConfigError(f"'dram.technology' must be one of {', '.join(DRAM_TECHNOLOGIES)}, "
                              f"got {self.dram_technology!r}")
        # A figure other than the default beside a named preset would go unused: refused.
        custom_figure = self.energy.dram_pj_per_byte
        if self.dram_technology != CUSTOM and custom_figure != EnergyConstants().dram_pj_per_byte:
            raise ConfigError(f"'energy.dram_pj_per_byte' ({custom_figure:g}) is read only with "
                              f"dram.technology = \"{CUSTOM}\" (set it in [dram]), not with "
                              f"\"{self.dram_technology}\"")
        anchors, energies = self.energy.sram_anchor_bytes, self.energy.sram_anchor_pj_per_64bit
        if len(anchors) < 2 or list(anchors) != sorted(set(anchors)):
            raise ConfigError("'energy.sram_anchor_bytes' must be at least 2 strictly "
                              f"increasing sizes, got {list(anchors)}")
        if len(energies) != len(anchors):
            raise ConfigError(f"'energy.sram_anchor_pj_per_64bit' must have one energy per "
                              f"'energy.sram_anchor_bytes' ({len(anchors)}), got {len(energies)}")

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_bandwidth_bytes_per_s / self.frequency_hz

    @property
    def dram_pj_per_byte(self) -> float:
        """The energy of one DRAM byte: the preset's figure, or the custom one."""
        if self.dram_technology == CUSTOM:
            return self.energy.dram_pj_per_byte
        return DRAM_PRESETS[self.dram_technology].pj_per_byte

    @property
    def hash(self) -> str:
        return config_hash(self)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, resolved, as a TOML-shaped dict (`from_dict` reads it back)."""
        return to_table(self)

    def to_toml(self) -> str:
        """Every parameter, resolved, as commented TOML (`from_toml` reads it back)."""
        return to_toml(self)

    @classmethod
    def from_dict(cls, table: dict[str, Any], source: str = "<config>") -> HardwareConfig:
        """The config a parsed TOML table describes: its values over the defaults."""
        try:
            return build(cls, values_from_table(cls, table))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> HardwareConfig:
        """Read a config file (at most CONFIG_FILE_CAP bytes of UTF-8 TOML)."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"hardware config '{path}' not found")
        try:
            text = read_bounded_text(path, CONFIG_FILE_CAP, "hardware config")
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        try:
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"hardware config '{path}' is not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"hardware config '{path}' nests arrays or tables too deeply") \
                from None
        return cls.from_dict(table, str(path))


def config_from_dict(table: dict[str, Any], source: str = "<config>") -> HardwareConfig:
    return HardwareConfig.from_dict(table, source)


def load_config(path: str | Path | None = None) -> HardwareConfig:
    """Load a config file (configs/default.toml when `path` is None)."""
    return HardwareConfig.from_toml(DEFAULT_CONFIG_PATH if path is None else path)


def resolve_config(spec: str | Path | None) -> HardwareConfig:
    """A config from a CLI `--hw` value: a TOML path, or the name of a file in configs/."""
    if spec is None:
        return load_config(None)
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists():
        candidate = CONFIGS_DIR / f"{spec}.toml"
        if not candidate.exists():
            known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.toml")))
            raise ConfigError(f"hardware config '{spec}' not found (known: {known})")
        path = candidate
    return load_config(path)


def shipped_config_with_hash(digest: str) -> HardwareConfig | None:
    """The config in configs/ whose hash is `digest` (a binary's), if any."""
    for path in sorted(CONFIGS_DIR.glob("*.toml")):
        config = load_config(path)
        if config.hash == digest:
            return config
    return None


def config_hash(config: HardwareConfig) -> str:
    """SHA-256 of the canonical JSON of the fully resolved config: configs describing the
    same hardware hash alike, however many values their files state. Parameters declared
    `hashed_at_default=False` count only when they differ from their default."""
    canonical = json.dumps(hashed_table(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


if __name__ == "__main__":  # python -m esact_cc.runtime.hw_config [NAME|FILE.toml]
    import sys

    try:
        sys.stdout.write(resolve_config(sys.argv[1] if len(sys.argv) > 1 else None).to_toml())
    except ConfigError as exc:
        sys.exit(f"hw_config: error: {exc}")
