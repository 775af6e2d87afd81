"""Energy constants: parsing, technology scaling, SRAM size interpolation, static power,
and per-instruction charging from work records."""

import math

import numpy as np
import pytest
from esact_cc.runtime.energy import EnergyModel, sram_pj_per_64bit
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import config_from_dict, load_config
from esact_cc.runtime.work_table import WorkTable

CONFIG = load_config()
MODEL = EnergyModel.from_config(CONFIG)
SCALE = (28 / 45) * (0.9 / 0.9) ** 2  # default node 28 nm, sources at 45 nm / 0.9 V


def test_cited_constants_are_stored_unmodified():
    e = CONFIG.energy
    # Horowitz ISSCC 2014, 45 nm
    assert (e.int8_mul_pj, e.int32_add_pj, e.int8_add_pj) == (0.2, 0.1, 0.03)
    assert (e.fp32_add_pj, e.fp32_mul_pj) == (0.9, 3.7)
    assert e.sram_anchor_bytes == (8192, 32768, 1048576)
    assert e.sram_anchor_pj_per_64bit == (10, 20, 100)
    assert e.dram_pj_per_byte == 1300 / 8


def test_dynamic_energies_scale_with_node_and_voltage():
    assert MODEL.mac_pj == pytest.approx(0.3 * SCALE)
    assert MODEL.shift_add_pj == pytest.approx(0.03 * SCALE)
    assert MODEL.sfu_element_pj == pytest.approx(4.6 * SCALE)
    assert MODEL.dram_pj_per_byte == 162.5  # off-chip: not scaled
    raw = CONFIG.to_dict()
    raw["technology"] = {"node_nm": 45.0, "vdd_v": 0.9}
    assert EnergyModel.from_config(config_from_dict(raw)).mac_pj == pytest.approx(0.3)
    raw["technology"] = {"node_nm": 45.0, "vdd_v": 0.45}
    assert EnergyModel.from_config(config_from_dict(raw)).mac_pj == pytest.approx(0.3 / 4)


def test_sram_energy_interpolates_the_anchors_log_log():
    anchors, pj = (8192.0, 32768.0, 1048576.0), (10.0, 20.0, 100.0)
    for a, e in zip(anchors, pj):
        assert sram_pj_per_64bit(a, anchors, pj) == pytest.approx(e)
    # halfway (geometric) between 8 KB and 32 KB: geometric mean of 10 and 20
    assert sram_pj_per_64bit(16384, anchors, pj) == pytest.approx(math.sqrt(200))
    # the 1 MiB weight buffer is the 1 MB anchor: 100 pJ / 8 bytes, scaled
    assert MODEL.sram_read_pj_per_byte["wbuf"] == pytest.approx(100 / 8 * SCALE)
    # bigger buffers cost more per byte
    assert MODEL.sram_read_pj_per_byte["mbuf"] < MODEL.sram_read_pj_per_byte["abuf"] \
        < MODEL.sram_read_pj_per_byte["wbuf"]


def test_static_power_from_leakage_constants():
    e = CONFIG.energy
    leak = 28 / 40
    mac = 1024 * (e.leak_int32_mul_mw / 16 + e.leak_int32_add_mw + 32 * e.leak_register_bit_mw)
    sfu = 64 * (e.leak_fp32_add_mw + e.leak_fp32_mul_mw)
    assert MODEL.static_power_w["mac_array"] == pytest.approx(mac * 1e-3 * leak)
    assert MODEL.static_power_w["sfu"] == pytest.approx(sfu * 1e-3 * leak)
    sram_bits = 8 * (1048576 + 524288 + 524288 + 1048576 + 65536)
    assert MODEL.static_power_w["sram"] == pytest.approx(sram_bits * 50e-12)
    assert MODEL.static_energy_pj(1000, 1e9) == pytest.approx(MODEL.total_static_power_w * 1e-6 * 1e12)


def test_instruction_energy_charges_executed_work_only():
    work = WorkTable.from_records([
        {"macs_dense": 1000, "macs_executed": 400, "sram_read_bytes": {"WBUF": 10, "ABUF": 20},
         "sram_write_bytes": {"ACC": 8}},
        {"sfu_elements": 100, "dram_read_bytes": 64},
    ])
    energy = MODEL.dynamic_energy(work, np.array([1, 4]), np.array([0, 0]), 1e9)
    assert energy["mac"].tolist() == pytest.approx([400 * MODEL.mac_pj, 0])
    assert energy["sfu"].tolist() == pytest.approx([0, 400 * MODEL.sfu_element_pj])
    assert energy["sram_wbuf"][0] == pytest.approx(10 * MODEL.sram_read_pj_per_byte["wbuf"])
    assert energy["sram_acc"][0] == pytest.approx(8 * MODEL.sram_write_pj_per_byte["acc"])
    assert energy["dram"].tolist() == pytest.approx([0, 64 * 162.5])


@pytest.mark.parametrize("field,value", [("int8_mul_pj", -1.0), ("dram_pj_per_byte", "x"),
                                         ("sram_anchor_bytes", [1])])
def test_bad_energy_fields_are_config_errors(field, value):
    raw = CONFIG.to_dict()
    raw["energy"][field] = value
    with pytest.raises(ConfigError, match=field):
        config_from_dict(raw, "bad.toml")


def test_config_without_energy_section_uses_the_default_constants():
    raw = CONFIG.to_dict()
    del raw["energy"]
    del raw["technology"]
    config = config_from_dict(raw)
    assert config.energy == CONFIG.energy
    assert config.hash == CONFIG.hash  # the hash covers the resolved hardware, not the file


def test_every_energy_constant_is_documented_with_a_source():
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "hardware.md").read_text()
    for name in CONFIG.to_dict()["energy"]:
        assert name in doc, f"docs/hardware.md does not document energy.{name}"


def test_every_shipped_config_loads_and_has_its_own_hash():
    from esact_cc.runtime.hw_config import CONFIGS_DIR, resolve_config

    hashes = {}
    for path in sorted(CONFIGS_DIR.glob("*.toml")):
        config = resolve_config(path.stem)
        EnergyModel.from_config(config)
        hashes[config.hash] = path.stem
    assert len(hashes) == len(list(CONFIGS_DIR.glob("*.toml"))) >= 2
