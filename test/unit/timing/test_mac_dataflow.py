"""The MAC array's dataflow (`mac_array.dataflow`): each GEMM cost checked against a hand
computation, skipped rows saving cycles only where the dataflow lets them, the energy following
the executed work under both, and the parameter validated and kept out of the default hash."""

import numpy as np
import pytest
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import Instruction, Work
from esact_cc.runtime.isa_costs import mac_tile_cost
from esact_cc.runtime.timing import time_program
from esact_cc.runtime.work_table import WorkTable

OS = HardwareConfig()
WS = HardwareConfig(mac_dataflow="weight_stationary")


def gemm_work(rows, k, cols, m=None, n=None):
    return Work(macs_dense=(m or rows) * k * (n or cols), macs_executed=rows * k * cols,
                rows_total=m or rows, rows_executed=rows, cols_total=n or cols,
                cols_executed=cols)


def cycles(config, rows, k, cols):
    return int(mac_tile_cost({}, config, gemm_work(rows, k, cols)))


def test_default_is_output_stationary_and_hash_unchanged():
    assert OS.mac_dataflow == "output_stationary"
    assert HardwareConfig(mac_dataflow="output_stationary").hash == OS.hash
    assert WS.hash != OS.hash


@pytest.mark.parametrize(("rows", "k", "cols", "expected"), [
    # ceil(rows/32) * ceil(cols/32) output tiles, each a K-deep pass, + 32 + 32 fill/drain
    (17, 64, 64, 1 * 2 * 64 + 64),      # 192
    (9, 64, 64, 1 * 2 * 64 + 64),       # fewer rows in the same tile: 192 again
    (128, 768, 768, 4 * 24 * 768 + 64),  # 73792
    (69, 768, 768, 3 * 24 * 768 + 64),  # 54% of 128 rows: 3 row tiles, 55360
])
def test_output_stationary_by_hand(rows, k, cols, expected):
    assert cycles(OS, rows, k, cols) == expected


@pytest.mark.parametrize(("rows", "k", "cols", "expected"), [
    # ceil(k/32) * ceil(cols/32) weight tiles, each max(rows, 32) cycles, + 32 + 32
    (17, 64, 64, 2 * 2 * 32 + 64),       # 192: the 32-cycle weight reload binds
    (128, 768, 768, 24 * 24 * 128 + 64),  # 73792: the dense GEMM costs what OS charges
    (69, 768, 768, 24 * 24 * 69 + 64),   # 39808: every skipped row saves 576 cycles
    (40, 100, 33, 4 * 2 * 40 + 64),      # ragged depth and columns round up to tiles
])
def test_weight_stationary_by_hand(rows, k, cols, expected):
    assert cycles(WS, rows, k, cols) == expected


def test_only_weight_stationary_saves_below_a_row_tile():
    # 128 -> 110 rows kept: still 4 row tiles output-stationary, 18 rows fewer streamed.
    assert cycles(OS, 110, 768, 768) == cycles(OS, 128, 768, 768)
    assert cycles(WS, 128, 768, 768) - cycles(WS, 110, 768, 768) == 18 * 24 * 24


def test_empty_gemm_costs_one_cycle_in_both():
    for config in (OS, WS):
        assert cycles(config, 0, 64, 64) == 1


def test_timing_model_uses_the_dataflow_and_energy_follows_executed_work():
    instr, halt = Instruction.make("gemm", m=128, k=768, n=768), Instruction.make("halt")
    works = [gemm_work(69, 768, 768, m=128), Work()]
    timed = {c.mac_dataflow: time_program([instr, halt], works, c) for c in (OS, WS)}
    assert timed["output_stationary"].schedule.cycles[0] == 3 * 24 * 768 + 64
    assert timed["weight_stationary"].schedule.cycles[0] == 24 * 24 * 69 + 64
    # Dynamic energy is the executed MACs' under both; static energy follows each one's cycles.
    table = WorkTable.from_records([{"macs_dense": 128 * 768 * 768,
                                     "macs_executed": 69 * 768 * 768}])
    for config in (OS, WS):
        model = EnergyModel.from_config(config)
        mac = model.dynamic_energy(table, np.array([1]), np.array([0]), config.frequency_hz)["mac"]
        assert mac.tolist() == pytest.approx([69 * 768 * 768 * model.mac_pj])
    os_static, ws_static = (EnergyModel.from_config(c).static_energy_pj(
        timed[c.mac_dataflow].schedule.total_cycles, c.frequency_hz) for c in (OS, WS))
    assert ws_static < os_static


def test_unknown_dataflow_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"'mac_array.dataflow' must be one of "
                                          r"output_stationary, weight_stationary"):
        HardwareConfig(mac_dataflow="row_stationary")
    config = HardwareConfig.from_dict({"mac_array": {"dataflow": "weight_stationary"}})
    assert config.mac_dataflow == "weight_stationary"
