"""BPU_SCORES, the BPU's PAM products streamed into the score path (runtime/isa_prediction_scores.py):
on the functional model it writes the SPA and prob rows BPU then PAM_SCORES (or TOPK of the
integer products) write, bit for bit; its SRAM traffic has no ACC bytes (hand count); its cycles,
by hand: with `bpu.score_ranking = "serial"` the two instructions' less one issue, pipelined
(the default) the two-stage row pipeline's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import HardwareConfig, load_config
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Buffer, Instruction
from esact_cc.runtime.isa_costs import SFU_PASSES
from esact_cc.runtime.spls_kernels import hlog_levels

CFG = load_config()
SERIAL = HardwareConfig(bpu_score_ranking="serial")
ROWS, COLS, DEPTH, K = 5, 70, 16, 9
Q, KEYS, ACC = 0, 1000, 0  # ABUF: Q^ rows (stride DEPTH + 3), K^ rows; ACC products
Q_STRIDE = DEPTH + 3  # a head's columns inside wider code rows
SCALE, SCALARS, MASK, PROB, PROB_SEPARATE = 0, 100, 200, 1000, 2000  # VBUF
SPA, SPA_SEPARATE = 0, 1000  # MBUF


def _score_fields(mask: str, causal: bool, prob: bool) -> dict[str, int]:
    fields = {"rows": ROWS, "cols": COLS, "k": K, "causal": int(causal),
              "causal_offset": 2 if causal else 0}
    if mask == "integer":
        return fields
    return {**fields, "scale_addr": SCALE, "scalar_count": 2, "scalar_addr": SCALARS,
            "has_add_mask": int(mask in ("row", "block")), "add_mask_addr": MASK,
            "add_mask_rows": int(mask == "block"), "has_prob": int(prob)}


def _fused(mask: str, causal: bool, prob: bool) -> Instruction:
    return Instruction.make("bpu_scores", spa_addr=SPA, a_addr=Q, b_addr=KEYS, depth=DEPTH,
                            a_stride=Q_STRIDE, integer_rank=int(mask == "integer"),
                            prob_addr=PROB, **_score_fields(mask, causal, prob))


def _separate(mask: str, causal: bool, prob: bool) -> list[Instruction]:
    """What the lowering emitted before BPU_SCORES (passes/lower_spls_to_esact.py)."""
    bpu = Instruction.make("bpu", dst_addr=ACC, a_buf=Buffer.ABUF, a_addr=Q, b_buf=Buffer.ABUF,
                           b_addr=KEYS, m=ROWS, k=DEPTH, n=COLS, a_stride=Q_STRIDE,
                           transpose_b=1)
    if mask == "integer":
        return [bpu, Instruction.make("topk", dst_addr=SPA_SEPARATE, src_buf=Buffer.ACC,
                                      src_addr=ACC, rows=ROWS, cols=COLS, k=K, causal=int(causal),
                                      causal_offset=2 if causal else 0)]
    return [bpu, Instruction.make("pam_scores", spa_addr=SPA_SEPARATE, src_addr=ACC,
                                  prob_addr=PROB_SEPARATE, **_score_fields(mask, causal, prob))]


def _machine(instrs: list[Instruction], mask: str) -> Machine:
    program = Program([*instrs, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    m = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    rng = np.random.default_rng(7)
    levels = np.abs(hlog_levels(4))
    q = rng.choice(levels, (ROWS, Q_STRIDE)) * rng.choice([-1, 1], (ROWS, Q_STRIDE))
    keys = rng.choice(levels, (COLS, DEPTH)) * rng.choice([-1, 1], (COLS, DEPTH))
    keys[12] = keys[13]  # tied products: the lower key wins in both forms
    abuf = m.buffers[Buffer.ABUF]
    abuf[Q:Q + q.size] = q.astype(np.int8).ravel()
    abuf[KEYS:KEYS + keys.size] = keys.astype(np.int8).ravel()
    vbuf = m.buffers[Buffer.VBUF]
    vbuf[SCALE:SCALE + COLS] = np.float32(3.1e-4)
    vbuf[SCALARS:SCALARS + 2] = [0.0173, 0.29]
    rows = ROWS if mask == "block" else 1
    values = np.where(rng.random((rows, COLS)) < 0.3, np.float32(-10000.0), np.float32(0.0))
    vbuf[MASK:MASK + values.size] = values.ravel()
    return m


CASES = [("integer", False, False), ("integer", True, False), ("none", False, True),
         ("row", False, False), ("row", True, True), ("block", False, False),
         ("block", True, True)]


@pytest.mark.parametrize("mask, causal, prob", CASES)
def test_equals_bpu_then_the_score_path(mask: str, causal: bool, prob: bool) -> None:
    fused, separate = _fused(mask, causal, prob), _separate(mask, causal, prob)
    m = _machine([fused, *separate], mask)
    works = [m.step(i, instr) for i, instr in enumerate([fused, *separate])]
    mbuf, vbuf = m.buffers[Buffer.MBUF], m.buffers[Buffer.VBUF]
    spa = mbuf[SPA:SPA + ROWS * COLS]
    np.testing.assert_array_equal(spa, mbuf[SPA_SEPARATE:SPA_SEPARATE + ROWS * COLS])
    assert spa.sum() > 0
    prob_bytes = vbuf[PROB:PROB + ROWS * COLS].tobytes()
    assert prob_bytes == vbuf[PROB_SEPARATE:PROB_SEPARATE + ROWS * COLS].tobytes()
    assert any(vbuf[PROB:PROB + ROWS * COLS]) == prob
    assert works[0].shift_adds == works[1].shift_adds > 0
    assert (works[0].compare_ops, works[0].mask_kept) == (works[2].compare_ops,
                                                          works[2].mask_kept)


@pytest.mark.parametrize("mask, causal, prob", CASES)
def test_cost_and_traffic_equal_a_hand_computation(mask: str, causal: bool, prob: bool) -> None:
    fused, separate = _fused(mask, causal, prob), _separate(mask, causal, prob)
    m = _machine([fused, *separate], mask)
    works = [m.step(i, instr) for i, instr in enumerate([fused, *separate])]
    work, scores = works[0], ROWS * COLS
    rank_passes = 0 if mask == "integer" else 1 + (mask in ("row", "block"))
    passes = rank_passes + (SFU_PASSES["softmax"] if prob else 0)
    compares = scores * math.ceil(math.log2(K + 1))
    assert (work.sfu_elements, work.compare_ops) == (scores * passes, compares)
    lanes = CFG.bpu_lanes
    serial = (math.ceil(work.shift_adds / lanes)
              + max(math.ceil(scores * passes / lanes),
                    math.ceil(scores * rank_passes / lanes)
                    + math.ceil(compares / CFG.topk_lanes)) + 1)
    costs = [INSTRUCTION_SPECS[i.opcode_name].cost(i.fields, SERIAL, w)
             for i, w in zip([fused, *separate], works, strict=True)]
    assert costs[0] == serial == costs[1] + costs[2] - 1
    # Pipelined: stage 1 (lanes) = products + element passes, stage 2 = the ranking, per row.
    stage1 = math.ceil((work.shift_adds + scores * passes) / lanes)
    stage2 = math.ceil(compares / CFG.topk_lanes)
    pipelined = max(stage1, stage2) + math.ceil(min(stage1, stage2) / ROWS) + 1
    assert CFG.bpu_score_ranking == "pipelined"
    assert INSTRUCTION_SPECS["bpu_scores"].cost(fused.fields, CFG, work) == pipelined < serial
    # Read: the codes (ROWS x DEPTH of Q^, COLS x DEPTH of K^), the scale vector, two scalars
    # and the mask rows; written: SPA and the probs. No ACC: the products never leave the lanes.
    mask_bytes = {"integer": 0, "none": 0, "row": 4 * COLS, "block": 4 * scores}[mask]
    vbuf_read = 0 if mask == "integer" else 4 * COLS + 8 + mask_bytes
    assert work.sram_read_bytes == {"abuf": (ROWS + COLS) * DEPTH,
                                    **({"vbuf": vbuf_read} if vbuf_read else {})}
    assert work.sram_write_bytes == {"mbuf": scores, **({"vbuf": 4 * scores} if prob else {})}
    # The pair it replaces moved the int32 products through ACC: written, then read back.
    assert works[1].sram_write_bytes["acc"] == works[2].sram_read_bytes["acc"] == 4 * scores


def test_integer_rank_with_a_scale_is_rejected() -> None:
    instr = Instruction.make("bpu_scores", spa_addr=SPA, a_addr=Q, b_addr=KEYS, rows=2, cols=4,
                             depth=4, k=1, integer_rank=1, scalar_count=2)
    m = _machine([instr], "none")
    with pytest.raises(ProgramError, match="integer_rank ranks the bare products"):
        m.step(0, instr)


def test_more_keys_kept_than_the_row_has_is_rejected() -> None:
    instr = Instruction.make("bpu_scores", spa_addr=SPA, a_addr=Q, b_addr=KEYS, rows=2, cols=4,
                             depth=4, k=5, integer_rank=1)
    with pytest.raises(ProgramError, match="field 'k' = 5 > cols 4"):
        validate_program(Program([instr, Instruction.make("halt")], CFG.hash))
