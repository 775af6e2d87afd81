"""Hardware configuration: the one place every hardware number lives.

A config is a TOML file (read with the standard library `tomllib`); the default is
`configs/default.toml`, the reference hardware of DESIGN.md section 4. Each binary
stores `config_hash(config)` so that running it under another config is detected.
`[technology]` and `[energy]` hold the node and the cited energy constants (at their
source node; `runtime/energy.py` scales them); docs/hardware.md lists every source.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIGS_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.toml"


@dataclass(frozen=True)
class EnergyConstants:
    """The `[energy]` section, values exactly as cited (source node), see configs/default.toml."""

    reference_node_nm: float
    reference_vdd_v: float
    int8_mul_pj: float
    int32_add_pj: float
    int8_add_pj: float
    fp32_add_pj: float
    fp32_mul_pj: float
    sram_anchor_bytes: tuple[float, ...]
    sram_anchor_pj_per_64bit: tuple[float, ...]
    sram_write_factor: float
    dram_pj_per_byte: float
    leakage_reference_node_nm: float
    leak_int32_mul_mw: float
    leak_int32_add_mw: float
    leak_register_bit_mw: float
    leak_fp32_add_mw: float
    leak_fp32_mul_mw: float
    sram_leak_pw_per_bit: float
    host_power_w: float


@dataclass(frozen=True)
class HardwareConfig:
    """A parsed hardware config; `raw` keeps every section for the timing/energy models."""

    name: str
    frequency_hz: float
    mac_rows: int
    mac_cols: int
    bpu_lanes: int
    topk_lanes: int
    sfu_lanes: int
    weight_buffer_bytes: int
    activation_buffer_bytes: int
    accumulator_buffer_bytes: int
    vector_buffer_bytes: int
    mask_buffer_bytes: int
    dram_bandwidth_bytes_per_s: float
    dram_latency_cycles: int
    dram_capacity_bytes: int
    token_latency_cycles: int
    technology_node_nm: float
    vdd_v: float
    energy: EnergyConstants
    raw: dict[str, Any]

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram_bandwidth_bytes_per_s / self.frequency_hz

    @property
    def hash(self) -> str:
        return config_hash(self)


def _get(raw: dict[str, Any], path: str, kind: type, source: str) -> Any:
    node: Any = raw
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: missing field '{path}'")
        node = node[key]
    if kind is float and isinstance(node, int) and not isinstance(node, bool):
        node = float(node)
    if not isinstance(node, kind) or isinstance(node, bool):
        raise ConfigError(f"{source}: field '{path}' must be {kind.__name__}, got {node!r}")
    if kind in (int, float) and node <= 0:
        raise ConfigError(f"{source}: field '{path}' must be positive, got {node!r}")
    return node


def _get_nonneg(raw: dict[str, Any], path: str, source: str) -> float:
    node: Any = raw
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: missing field '{path}'")
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or node < 0:
        raise ConfigError(f"{source}: field '{path}' must be a non-negative number, got {node!r}")
    return float(node)


def _get_anchor_list(raw: dict[str, Any], path: str, source: str) -> tuple[float, ...]:
    section, key = path.split(".")
    value = raw.get(section, {}).get(key)
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{source}: field '{path}' must be a list of >= 2 positive numbers")
    return tuple(float(v) for v in value)


def _default_raw() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_CONFIG_PATH.read_text())


def _energy_from_raw(raw: dict[str, Any], source: str) -> EnergyConstants:
    if "energy" not in raw:
        # Configs written before [energy] existed (or minimal test configs) take the
        # default's cited constants; the hash still covers only what the file says.
        raw = {**raw, "energy": _default_raw()["energy"]}
        source = f"{source} (energy from {DEFAULT_CONFIG_PATH.name})"
    anchors = _get_anchor_list(raw, "energy.sram_anchor_bytes", source)
    anchor_pj = _get_anchor_list(raw, "energy.sram_anchor_pj_per_64bit", source)
    if len(anchors) != len(anchor_pj) or list(anchors) != sorted(set(anchors)):
        raise ConfigError(
            f"{source}: 'energy.sram_anchor_bytes' must be strictly increasing and as long as "
            "'energy.sram_anchor_pj_per_64bit'"
        )
    scalar_names = [
        f.name
        for f in EnergyConstants.__dataclass_fields__.values()
        if f.name not in ("sram_anchor_bytes", "sram_anchor_pj_per_64bit")
    ]
    values: dict[str, Any] = {n: _get_nonneg(raw, f"energy.{n}", source) for n in scalar_names}
    for positive in ("reference_node_nm", "reference_vdd_v", "leakage_reference_node_nm"):
        if values[positive] <= 0:
            raise ConfigError(f"{source}: field 'energy.{positive}' must be positive")
    return EnergyConstants(
        sram_anchor_bytes=anchors, sram_anchor_pj_per_64bit=anchor_pj, **values
    )


def _technology_from_raw(raw: dict[str, Any], source: str) -> tuple[float, float]:
    if "technology" not in raw:
        raw = {**raw, "technology": _default_raw()["technology"]}
    return (
        _get(raw, "technology.node_nm", float, source),
        _get(raw, "technology.vdd_v", float, source),
    )


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> HardwareConfig:
    node_nm, vdd_v = _technology_from_raw(raw, source)
    return HardwareConfig(
        name=_get(raw, "name", str, source),
        frequency_hz=_get(raw, "clock.frequency_hz", float, source),
        mac_rows=_get(raw, "mac_array.rows", int, source),
        mac_cols=_get(raw, "mac_array.cols", int, source),
        bpu_lanes=_get(raw, "bpu.lanes", int, source),
        topk_lanes=_get(raw, "topk.lanes", int, source),
        sfu_lanes=_get(raw, "sfu.lanes", int, source),
        weight_buffer_bytes=_get(raw, "sram.weight_buffer", int, source),
        activation_buffer_bytes=_get(raw, "sram.activation_buffer", int, source),
        accumulator_buffer_bytes=_get(raw, "sram.accumulator_buffer", int, source),
        vector_buffer_bytes=_get(raw, "sram.vector_buffer", int, source),
        mask_buffer_bytes=_get(raw, "sram.mask_buffer", int, source),
        dram_bandwidth_bytes_per_s=_get(raw, "dram.bandwidth_bytes_per_s", float, source),
        dram_latency_cycles=_get(raw, "dram.latency_cycles", int, source),
        dram_capacity_bytes=_get(raw, "dram.capacity_bytes", int, source),
        token_latency_cycles=_get(raw, "tokens.latency_cycles", int, source),
        technology_node_nm=node_nm,
        vdd_v=vdd_v,
        energy=_energy_from_raw(raw, source),
        raw=raw,
    )


def load_config(path: str | Path | None = None) -> HardwareConfig:
    """Load a config file (the default one when `path` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"hardware config '{path}' not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"hardware config '{path}' is not valid TOML: {exc}") from None
    return config_from_dict(raw, str(path))


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
    """SHA-256 of the canonical JSON of the config's contents (not of its file's formatting)."""
    canonical = json.dumps(config.raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
