"""Hardware configuration: the one place every hardware number lives.

A config is a TOML file (read with the standard library `tomllib`); the default is
`configs/default.toml`, the reference hardware of DESIGN.md section 4. Each binary
stores `config_hash(config)` so that running it under another config is detected.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).parent / "configs" / "default.toml"


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


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> HardwareConfig:
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


def config_hash(config: HardwareConfig) -> str:
    """SHA-256 of the canonical JSON of the config's contents (not of its file's formatting)."""
    canonical = json.dumps(config.raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
