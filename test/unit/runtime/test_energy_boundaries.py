"""Energy at two boundaries (on-chip, system) and the DRAM technology presets: a tiny program's
energy computed by hand from the cited constants, each preset selectable by TOML and by the
config class, an unknown preset one line naming the valid ones."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from esact_cc.runtime.dram_presets import DRAM_PRESETS, DRAM_TECHNOLOGIES
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig, config_from_dict, load_config
from esact_cc.runtime.hw_params import hashed_table
from esact_cc.runtime.report import InstructionInfo, build_report
from esact_cc.runtime.timing import simulate
from esact_cc.runtime.work_table import WorkTable

LOAD, COMPUTE, STORE = 0, 1, 4
DEFAULT_HASH = HardwareConfig().hash


def tiny_report(config: HardwareConfig) -> dict:
    """load 1000 B -> one 4096-MAC GEMM (ABUF/WBUF reads, ACC write) -> store 256 B."""
    queues = [LOAD, COMPUTE, STORE]
    schedule = simulate(queues, [0, 1 << LOAD, 1 << COMPUTE], [1 << COMPUTE, 1 << STORE, 0],
                        [100, 200, 50], [100, 0, 50], 1)
    info = InstructionInfo(["load", "gemm", "store"], queues, ["dma", "mac", "dma"],
                           ["", "fc", ""], [None, 0, None], ["load", "q", "store"])
    work = WorkTable.from_records([
        {"dram_read_bytes": 1000, "sram_write_bytes": {"abuf": 1000}},
        {"macs_dense": 8192, "macs_executed": 4096,
         "sram_read_bytes": {"abuf": 64, "wbuf": 4096}, "sram_write_bytes": {"acc": 256}},
        {"dram_write_bytes": 256, "sram_read_bytes": {"acc": 256}},
    ])
    return build_report(info, schedule, work, EnergyModel.from_config(config), config)


def sram_pj_per_byte(size: int) -> float:
    """Horowitz's cache energies (10 pJ @ 8 KB, 20 pJ @ 32 KB, 100 pJ @ 1 MB per 64 bits),
    log-log between the anchors, per byte, at 28 nm / 0.9 V (x 28/45)."""
    a = [(8192, 10.0), (32768, 20.0), (1048576, 100.0)]
    (x0, y0), (x1, y1) = (a[1], a[2]) if size > 32768 else (a[0], a[1])
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (size / x0) ** slope / 8 * 28 / 45


def test_tiny_program_by_hand_at_both_boundaries():
    config = load_config()
    report = tiny_report(config)
    e = report["energy"]
    scale = 28 / 45
    mac = 4096 * (0.2 + 0.1) * scale  # executed MACs: INT8 multiply + INT32 add
    abuf = sram_pj_per_byte(512 << 10) * (1000 + 64)
    wbuf = sram_pj_per_byte(1 << 20) * 4096
    acc = sram_pj_per_byte(512 << 10) * (256 + 256)
    on_chip_dynamic = mac + abuf + wbuf + acc
    dram = (1000 + 256) * 162.5  # ddr3: Horowitz's 1.3 nJ per 64-bit access
    seconds = report["total"]["cycles"] / 1e9
    leakage = EnergyModel.from_config(config).total_static_power_w * seconds * 1e12

    assert e["dram_technology"] == "ddr3" and e["dram_pj_per_byte"] == 162.5
    assert e["breakdown_pj"]["mac"] == pytest.approx(mac)
    assert e["on_chip"]["dynamic_pj"] == pytest.approx(on_chip_dynamic)
    assert e["on_chip"]["static_pj"] == pytest.approx(leakage)
    assert e["on_chip"]["energy_pj"] == pytest.approx(on_chip_dynamic + leakage)
    assert e["system"]["off_chip_pj"] == pytest.approx(dram)
    assert e["system"]["energy_pj"] == pytest.approx(on_chip_dynamic + leakage + dram)
    for boundary in ("on_chip", "system"):
        joules = e[boundary]["energy_pj"]
        assert e[boundary]["tops_per_watt"] == pytest.approx(2 * 8192 / joules)
        assert e[boundary]["tops_per_watt_executed"] == pytest.approx(2 * 4096 / joules)
        assert e[boundary]["average_power_w"] == pytest.approx(joules * 1e-12 / seconds)
    q = report["components"]["q"]
    assert q["energy_on_chip_pj"] == pytest.approx(mac + sram_pj_per_byte(512 << 10) * 64
                                                   + wbuf + sram_pj_per_byte(512 << 10) * 256)
    assert report["components"]["load"]["energy_on_chip_pj"] == pytest.approx(
        sram_pj_per_byte(512 << 10) * 1000)
    assert report["components"]["load"]["energy_system_pj"] == pytest.approx(
        sram_pj_per_byte(512 << 10) * 1000 + 1000 * 162.5)


@pytest.mark.parametrize("technology", sorted(DRAM_PRESETS))
def test_each_preset_by_toml_and_by_class(tmp_path: Path, technology: str):
    path = tmp_path / "point.toml"
    path.write_text(f'[dram]\ntechnology = "{technology}"\n')
    from_toml = load_config(path)
    from_class = HardwareConfig(dram_technology=technology)
    assert from_toml == from_class and from_toml.hash == from_class.hash
    preset = DRAM_PRESETS[technology]
    assert from_class.dram_pj_per_byte == preset.pj_per_bit * 8
    report = tiny_report(from_class)
    assert report["energy"]["system"]["off_chip_pj"] == pytest.approx(1256 * preset.pj_per_byte)
    # on-chip energy does not depend on the DRAM: the point of the boundary
    assert report["energy"]["on_chip"] == tiny_report(load_config())["energy"]["on_chip"]
    assert (from_class.hash == DEFAULT_HASH) == (technology == "ddr3")


def test_presets_order_as_published():
    per_bit = {name: p.pj_per_bit for name, p in DRAM_PRESETS.items()}
    assert per_bit["hbm2"] < per_bit["lpddr4"] < per_bit["gddr5"] < per_bit["ddr3"]
    assert DRAM_PRESETS["ddr3"].pj_per_byte == 162.5


def test_unknown_preset_is_one_line_naming_the_valid_ones(tmp_path: Path):
    path = tmp_path / "ddr5.toml"
    path.write_text('[dram]\ntechnology = "ddr5"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and "'dram.technology'" in message
    assert all(name in message for name in DRAM_TECHNOLOGIES) and "'ddr5'" in message
    with pytest.raises(ConfigError, match="must be one of ddr3, lpddr4, gddr5, hbm2, custom"):
        HardwareConfig(dram_technology="DDR4")


def test_custom_figure_only_with_the_custom_technology():
    custom = config_from_dict({"dram": {"technology": "custom"},
                               "energy": {"dram_pj_per_byte": 40.0}})
    assert custom.dram_pj_per_byte == 40.0
    with pytest.raises(ConfigError, match=r"'energy.dram_pj_per_byte' \(40\) is read only with "
                                          r"dram.technology = \"custom\""):
        config_from_dict({"dram": {"technology": "hbm2"}, "energy": {"dram_pj_per_byte": 40.0}})
    with pytest.raises(ConfigError, match="not with \"ddr3\""):
        dataclasses.replace(HardwareConfig(), energy=dataclasses.replace(
            HardwareConfig().energy, dram_pj_per_byte=1.0))


def test_preset_at_its_default_is_left_out_of_the_hash():
    # the parameter arrived after binaries were recorded: their config hash must not change
    assert HardwareConfig(dram_technology="ddr3").hash == DEFAULT_HASH
    assert "technology" not in hashed_table(HardwareConfig())["dram"]
    assert hashed_table(HardwareConfig(dram_technology="hbm2"))["dram"]["technology"] == "hbm2"
    assert 'technology = "ddr3"' in HardwareConfig().to_toml()  # yet stated in the full TOML
