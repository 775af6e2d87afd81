"""The JSON report: required keys, totals that add up, per-component and per-layer rows."""

import json

import pytest
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.report import (
    COMPONENTS,
    InstructionInfo,
    build_report,
    format_summary,
    write_report,
)
from esact_cc.runtime.timing import simulate
from esact_cc.runtime.work_table import WorkTable

CONFIG = load_config()
ENERGY = EnergyModel.from_config(CONFIG)
LOAD, COMPUTE, PREDICT, SFU, STORE, HOST = range(6)


def make_report():
    queues = [LOAD, COMPUTE, COMPUTE, COMPUTE, SFU, STORE, COMPUTE]
    pops = [0, 1 << LOAD, 0, 0, 1 << COMPUTE, 1 << SFU, 0]
    pushes = [1 << COMPUTE, 0, 0, 1 << SFU, 1 << STORE, 0, 0]
    cycles = [1000, 800, 600, 400, 50, 300, 1]
    schedule = simulate(queues, pops, pushes, cycles, [900, 0, 0, 0, 0, 200, 0], 1)
    info = InstructionInfo(
        opcodes=["load", "gemm", "gemm", "gemm", "softmax", "store", "halt"],
        queues=queues,
        units=["dma", "mac", "mac", "mac", "sfu", "dma", "control"],
        nodes=["", "q0", "q1", "ffn1_0", "sm", "", ""],
        layers=[None, 0, 1, 0, 0, None, None],
        components=["load", "q", "q", "ffn1", "sfu", "store", "other"],
    )
    work = WorkTable.from_records([
        {"dram_read_bytes": 57600},
        {"macs_dense": 32768, "macs_executed": 32768},
        {"macs_dense": 32768, "macs_executed": 16384},
        {"macs_dense": 65536, "macs_executed": 65536},
        {"sfu_elements": 512},
        {"dram_write_bytes": 12800},
        {},
    ])
    return build_report(info, schedule, work, ENERGY, CONFIG, {"program": "x.esb"}), schedule


def test_required_keys_and_totals():
    report, schedule = make_report()
    t = report["total"]
    for key in ("cycles", "seconds", "macs_dense", "macs_executed"):
        assert key in t
    e = report["energy"]
    assert t["cycles"] == schedule.total_cycles
    assert t["seconds"] == pytest.approx(schedule.total_cycles / 1e9)
    assert t["macs_dense"] == 131072 and t["macs_executed"] == 114688
    for boundary in ("on_chip", "system"):
        assert e[boundary]["tops_per_watt"] == pytest.approx(2 * 131072 / e[boundary]["energy_pj"])
        assert e[boundary]["tops_per_watt_executed"] == pytest.approx(
            2 * 114688 / e[boundary]["energy_pj"])
    assert e["system"]["energy_pj"] == pytest.approx(
        e["on_chip"]["energy_pj"] + e["breakdown_pj"]["dram"] + e["breakdown_pj"]["host"])
    assert report["roofline_cycles"] <= t["cycles"]
    for name in ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2", "predict", "sfu", "host"):
        row = report["components"][name]
        assert {"macs_dense", "macs_executed", "cycles", "energy_on_chip_pj", "energy_system_pj",
                "layers"} <= set(row)
    assert set(report["units"]) == {"load", "compute", "predict", "sfu", "store", "host"}
    json.dumps(report)  # JSON-serialisable


def test_components_and_layers_add_up():
    report, _ = make_report()
    comps = report["components"]
    assert comps["q"]["macs_dense"] == 65536 and comps["q"]["macs_executed"] == 49152
    assert comps["q"]["cycles"] == 800 + 600
    assert comps["q"]["layers"]["0"]["macs_executed"] == 32768
    assert comps["q"]["layers"]["1"]["macs_executed"] == 16384
    assert comps["ffn1"]["mac_reduction"] == 0.0
    assert comps["q"]["mac_reduction"] == pytest.approx(0.25)
    energy = report["energy"]
    for boundary in ("on_chip", "system"):
        total_dynamic = sum(row[f"energy_{boundary}_pj"] for row in comps.values())
        assert total_dynamic == pytest.approx(energy[boundary]["dynamic_pj"])
    assert sum(energy["breakdown_pj"].values()) == pytest.approx(energy["system"]["energy_pj"])
    assert sum(r["cycles"] for r in report["layers"].values()) == sum(
        u["busy_cycles"] for u in report["units"].values())
    # MAC energy of q equals its executed MACs times the scaled MAC energy
    assert comps["q"]["energy_on_chip_pj"] == pytest.approx(49152 * ENERGY.mac_pj)


def test_summary_table_and_atomic_write(tmp_path):
    report, _ = make_report()
    text = format_summary(report)
    assert "TOPS/W" in text and "ffn1" in text and "compute" in text
    path = tmp_path / "r.json"
    write_report(path, report)
    assert json.loads(path.read_text())["total"]["cycles"] == report["total"]["cycles"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_component_list_matches_the_binary_format():
    from esact_cc.runtime.esb import COMPONENTS as ESB_COMPONENTS

    assert set(COMPONENTS) == set(ESB_COMPONENTS)
