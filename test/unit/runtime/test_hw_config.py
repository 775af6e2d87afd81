"""The hardware config class: defaults, design points that state only what differs, the hash
of the resolved config, and adding a parameter without touching any TOML file."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import (
    CONFIGS_DIR,
    HardwareConfig,
    config_from_dict,
    load_config,
    resolve_config,
)
from esact_cc.runtime.hw_params import key_of, param, schema, values_from_table
from esact_cc.runtime.isa import BUFFER_CONFIG_ATTRS, BUFFER_DTYPES, SRAM_ADDR_BITS, Buffer

ROOT = Path(__file__).resolve().parents[3]
BENCH_CONFIGS = ROOT / "bench" / "configs"
DEFAULT = HardwareConfig()

# The hash every golden binary (test/e2e/test_golden_binaries.py) records: it was the hash of
# the full default.toml before the defaults moved into the class, and must not change.
DEFAULT_HASH = "33e9bd37dbeb6a2e28799698ea48a5699eb9fdeaf65d63596c332706a77819e6"


def shipped_tomls() -> list[Path]:
    return sorted(CONFIGS_DIR.glob("*.toml")) + sorted(BENCH_CONFIGS.glob("*.toml"))


def test_default_file_is_the_class_defaults_with_the_recorded_hash():
    assert load_config() == DEFAULT == resolve_config("default")
    assert DEFAULT.hash == DEFAULT_HASH
    assert DEFAULT.mac_rows == 32 and DEFAULT.energy.int8_mul_pj == 0.2
    assert DEFAULT.dram_bytes_per_cycle == 64.0


@pytest.mark.parametrize("path", shipped_tomls(), ids=lambda p: p.name)
def test_shipped_design_points_state_only_what_differs(path: Path):
    stated = values_from_table(HardwareConfig, tomllib.loads(path.read_text()))
    default = DEFAULT.to_dict()
    for key, value in stated.items():
        node = default
        for part in key.split("."):
            node = node[part]
        assert value != (list(node) if isinstance(node, tuple) else node), \
            f"{path.name} restates the default of '{key}'"


def test_design_point_gets_every_unstated_value_from_the_defaults():
    large = resolve_config("large")
    assert (large.mac_rows, large.mac_cols, large.weight_buffer_bytes) == (64, 64, 2 << 20)
    assert large.dram_bandwidth_bytes_per_s == 128e9
    unstated = ("frequency_hz", "dram_latency_cycles", "dram_capacity_bytes",
                "token_latency_cycles", "technology_node_nm", "vdd_v", "energy")
    for attr in unstated:
        assert getattr(large, attr) == getattr(DEFAULT, attr), attr
    assert large.hash != DEFAULT.hash


def test_hash_covers_the_resolved_config_not_the_file():
    # stating every default explicitly, or nothing, is the same hardware
    assert config_from_dict(DEFAULT.to_dict()).hash == config_from_dict({}).hash == DEFAULT_HASH
    changed = config_from_dict({"tokens": {"latency_cycles": 2}})
    assert changed.hash != DEFAULT_HASH
    assert config_from_dict(changed.to_dict()) == changed  # to_dict round-trips


def test_a_float_parameter_written_as_an_integer_is_the_same_config():
    assert config_from_dict({"clock": {"frequency_hz": 1_000_000_000}}).hash == DEFAULT_HASH


def test_construction_and_replace_validate():
    with pytest.raises(ConfigError, match="'mac_array.rows' must be within"):
        dataclasses.replace(DEFAULT, mac_rows=0)
    with pytest.raises(ConfigError, match="'clock.frequency_hz' must be a finite number"):
        HardwareConfig(frequency_hz=float("nan"))
    point = dataclasses.replace(DEFAULT, name="wide", mac_cols=64)
    assert point.mac_cols == 64 and point.mac_rows == 32


@pytest.mark.parametrize("buf", list(Buffer), ids=lambda b: b.name)
def test_buffer_sizes_are_bounded_by_the_isa_address_field(buf: Buffer):
    attr = BUFFER_CONFIG_ATTRS[buf]
    toml_key = key_of(HardwareConfig, attr)
    section, name = toml_key.split(".")
    itemsize = BUFFER_DTYPES[buf].itemsize
    largest = (1 << SRAM_ADDR_BITS) * itemsize
    assert getattr(config_from_dict({section: {name: largest}}), attr) == largest
    with pytest.raises(ConfigError, match=f"'{toml_key}' must be at most {largest} bytes"):
        config_from_dict({section: {name: largest + itemsize}})
    if itemsize > 1:
        with pytest.raises(ConfigError, match=f"'{toml_key}' must be a multiple of {itemsize}"):
            config_from_dict({section: {name: 1024 + 1}})


# --- adding a parameter: one field, no TOML edit ---------------------------------------------

@dataclass(frozen=True)
class WithSoftmaxUnit(HardwareConfig):
    """A design with a new unit: the field is the whole change (a real one goes in the class)."""

    softmax_lanes: int = param(16, "softmax_unit.lanes", 1, 1 << 12,
                               doc="exp/divide lanes of a dedicated softmax unit")

    def validate(self) -> None:
        super().validate()
        if self.softmax_lanes > self.sfu_lanes:
            raise ConfigError("'softmax_unit.lanes' must not exceed 'sfu.lanes'")


@pytest.mark.parametrize("path", shipped_tomls(), ids=lambda p: p.name)
def test_a_new_parameter_needs_no_toml_edit(path: Path):
    base = HardwareConfig.from_toml(path)
    extended = WithSoftmaxUnit.from_toml(path)
    assert extended.softmax_lanes == 16
    assert all(getattr(extended, f.name) == getattr(base, f.name)
               for f in dataclasses.fields(HardwareConfig))
    assert extended.to_dict()["softmax_unit"] == {"lanes": 16}
    assert extended.hash != base.hash  # the hash covers the new parameter too


def test_a_new_parameter_is_read_checked_and_unknown_to_the_base_class(tmp_path: Path):
    path = tmp_path / "softmax.toml"
    path.write_text("[softmax_unit]\nlanes = 32\n")
    assert WithSoftmaxUnit.from_toml(path).softmax_lanes == 32
    with pytest.raises(ConfigError, match="unknown key 'softmax_unit'"):
        HardwareConfig.from_toml(path)
    path.write_text("[softmax_unit]\nlanes = 128\n")  # more than the 64 SFU lanes
    with pytest.raises(ConfigError, match="must not exceed 'sfu.lanes'"):
        WithSoftmaxUnit.from_toml(path)
    path.write_text("[softmax_unit]\nlanes = nan\n")
    with pytest.raises(ConfigError, match=r"softmax\.toml: 'softmax_unit.lanes' must be an int"):
        WithSoftmaxUnit.from_toml(path)


def test_every_parameter_is_documented():
    doc = (ROOT / "docs" / "hardware.md").read_text()
    for key, leaf in schema(HardwareConfig).items():
        assert leaf.param.doc, f"{key} has no doc in HardwareConfig"
        # the energy table lists its fields without the `energy.` prefix
        assert key.removeprefix("energy.") in doc, f"docs/hardware.md does not list {key}"


@pytest.mark.parametrize("config", [DEFAULT, resolve_config("large"),
                                    WithSoftmaxUnit(name="x\"y\u00e9", softmax_lanes=8)],
                         ids=["default", "large", "subclass"])
def test_to_toml_states_every_value_and_reads_back(tmp_path: Path, config: HardwareConfig):
    path = tmp_path / "full.toml"
    path.write_text(config.to_toml())
    assert type(config).from_toml(path) == config
    assert len(tomllib.loads(path.read_text())) == len({k.split(".")[0] for k in
                                                        schema(type(config))})


def test_module_prints_the_resolved_config(tmp_path: Path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "esact_cc.runtime.hw_config", "large"],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "large_full.toml").write_text(out)
    assert load_config(tmp_path / "large_full.toml").hash == resolve_config("large").hash
    assert "rows = 64  # INT8 MAC array rows" in out


def test_integers_for_float_parameters_are_the_same_config():
    point = HardwareConfig(frequency_hz=1_000_000_000, dram_bandwidth_bytes_per_s=64 * 10**9)
    assert point == DEFAULT and point.hash == DEFAULT_HASH
    assert isinstance(point.frequency_hz, float)
    with pytest.raises(ConfigError, match="'clock.frequency_hz' must be within"):
        HardwareConfig(frequency_hz=10**400)
