"""`bpu.score_ranking`: BPU_SCORES' products reach the top-k unit row by row (pipelined, the
default) or after the chunk's last product (serial); both costs against a hand computation at
BERT-base 512's chunk (32 rows x 512 keys, k = 51, an additive mask), the parameter validated
and kept out of the default config hash."""

import pytest
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Work

PIPELINED = HardwareConfig()
SERIAL = HardwareConfig(bpu_score_ranking="serial")
FIELDS = {"rows": 32, "cols": 512, "integer_rank": 0, "has_add_mask": 1, "has_prob": 0}
# 810,000 shift-adds (0.77 per product of 32 x 512 x 64); 2 element passes per score (scale,
# mask); ceil(log2(52)) = 6 compares per score.
WORK = Work(shift_adds=810_000, sfu_elements=2 * 32 * 512, compare_ops=6 * 32 * 512)


def cost(config: HardwareConfig, fields=FIELDS, work=WORK) -> int:
    return int(INSTRUCTION_SPECS["bpu_scores"].cost(fields, config, work))


def test_serial_is_the_products_then_the_score_path():
    # ceil(810000 / 512) = 1583 products; then max(64 passes, 64 + 98304 / 64 = 1536) + 1 issue
    assert cost(SERIAL) == 1583 + (64 + 1536) + 1 == 3184


def test_pipelined_overlaps_the_ranking_with_the_next_rows_products():
    # stage 1 (lanes): ceil((810000 + 32768) / 512) = 1647; stage 2 (top-k): 1536;
    # 32 rows: max(1647, 1536) + ceil(1536 / 32) = 1647 + 48, + 1 issue
    assert cost(PIPELINED) == 1647 + 48 + 1 == 1696


def test_pipelined_bound_by_the_ranking_when_the_lanes_are_faster():
    work = Work(shift_adds=10_000, sfu_elements=0, compare_ops=6 * 32 * 512)
    fields = FIELDS | {"integer_rank": 1, "has_add_mask": 0}
    # stage 1: ceil(10000 / 512) = 20; stage 2: 1536; + ceil(20 / 32) = 1, + 1 issue
    assert cost(PIPELINED, fields, work) == 1536 + 1 + 1
    # serial: 20 + max(0, 0 + 1536) + 1
    assert cost(SERIAL, fields, work) == 20 + 1536 + 1


def test_one_row_pipelines_nothing():
    fields, work = FIELDS | {"rows": 1}, Work(shift_adds=5120, sfu_elements=1024, compare_ops=3072)
    # stage 1: ceil(6144 / 512) = 12, stage 2: 48; one row: 48 + 12 + 1 = the serial sum
    assert cost(PIPELINED, fields, work) == 48 + 12 + 1 == cost(SERIAL, fields, work)


def test_default_is_pipelined_and_its_hash_unchanged():
    assert PIPELINED.bpu_score_ranking == "pipelined"
    assert HardwareConfig(bpu_score_ranking="pipelined").hash == PIPELINED.hash
    assert SERIAL.hash != PIPELINED.hash
    assert HardwareConfig.from_dict({"bpu": {"score_ranking": "serial"}}) == SERIAL


def test_an_unknown_value_is_one_error_line():
    with pytest.raises(ConfigError) as err:
        HardwareConfig.from_dict({"bpu": {"score_ranking": "overlapped"}})
    message = str(err.value)
    assert "\n" not in message and "'bpu.score_ranking' must be one of pipelined, serial" in message
