"""PAM_SCORES, the SPLS prediction unit's score path (runtime/isa_prediction_scores.py): on the
functional model it writes the SPA and prob rows the instructions it replaces (DEQUANT, ADD of
the mask, TOPK, SOFTMAX) write, bit for bit, for every mask form and the causal rule; its
cycles and SRAM traffic equal a hand computation of the documented cost."""

from __future__ import annotations

import math

import numpy as np
import pytest
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import Program, check_program_fits, validate_program
from esact_cc.runtime.functional import Machine
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Buffer, Instruction
from esact_cc.runtime.isa_costs import SFU_PASSES

CFG = load_config()
ROWS, COLS, K = 5, 70, 9  # 70 keys: two online-softmax chunks of 64
ACC, SCALE, SCALARS, MASK, PAM, PROB = 0, 0, 100, 200, 1000, 2000  # VBUF addresses but ACC
SPA, SPA_SEPARATE = 0, 1000  # MBUF


def _scores_instruction(mask: str, causal: bool, prob: bool) -> Instruction:
    return Instruction.make(
        "pam_scores", spa_addr=SPA, src_addr=ACC, rows=ROWS, cols=COLS, scale_addr=SCALE,
        scalar_count=2, scalar_addr=SCALARS, has_add_mask=int(mask != "none"),
        add_mask_addr=MASK, add_mask_rows=int(mask == "block"), causal=int(causal),
        causal_offset=2 if causal else 0, k=K, has_prob=int(prob), prob_addr=PROB)


def _separate_instructions(mask: str, causal: bool, prob: bool) -> list[Instruction]:
    """What the lowering emitted before PAM_SCORES (passes/lower_spls_to_esact.py)."""
    causal_fields = {"causal": int(causal), "causal_offset": 2 if causal else 0}
    row_mask = {"has_add_mask": 1, "add_mask_addr": MASK} if mask == "row" else {}
    out = [Instruction.make("dequant", dst_addr=PAM, src_addr=ACC, rows=ROWS, cols=COLS,
                            scale_addr=SCALE, scalar_count=2, scalar_addr=SCALARS)]
    if mask == "block":
        out.append(Instruction.make("add", dst_addr=PAM, a_addr=PAM, b_addr=MASK, rows=ROWS,
                                    cols=COLS))
    out.append(Instruction.make("topk", dst_addr=SPA_SEPARATE, src_buf=Buffer.VBUF,
                                src_addr=PAM, rows=ROWS, cols=COLS, k=K, **row_mask,
                                **causal_fields))
    if prob:
        out.append(Instruction.make("softmax", dst_addr=PAM, src_addr=PAM, rows=ROWS, cols=COLS,
                                    scale=1.0, **row_mask, **causal_fields))
    return out


def _machine(instrs: list[Instruction], mask: str) -> Machine:
    program = Program([*instrs, Instruction.make("halt")], CFG.hash)
    validate_program(program)
    m = Machine(program, CFG, max(check_program_fits(program, CFG), 1 << 16))
    rng = np.random.default_rng(5)
    acc = rng.integers(-40000, 40000, (ROWS, COLS)).astype(np.int32)
    acc[1, :12] = acc[1, 12]  # ties: the lower key wins in both forms
    m.buffers[Buffer.ACC][ACC:ACC + acc.size] = acc.ravel()
    vbuf = m.buffers[Buffer.VBUF]
    vbuf[SCALE:SCALE + COLS] = np.float32(3.1e-4)
    vbuf[SCALARS:SCALARS + 2] = [0.0173, 0.29]
    rows = ROWS if mask == "block" else 1
    values = np.where(rng.random((rows, COLS)) < 0.3, np.float32(-10000.0), np.float32(0.0))
    if mask == "block":
        values[3] = -10000.0  # a row whose every key is masked still keeps k keys
    vbuf[MASK:MASK + values.size] = values.ravel()
    return m


@pytest.mark.parametrize("mask", ["none", "row", "block"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("prob", [False, True])
def test_scores_equal_the_separate_instructions(mask: str, causal: bool, prob: bool) -> None:
    fused = _scores_instruction(mask, causal, prob)
    separate = _separate_instructions(mask, causal, prob)
    m = _machine([fused, *separate], mask)
    for i, instr in enumerate([fused, *separate]):
        m.step(i, instr)
    mbuf, vbuf = m.buffers[Buffer.MBUF], m.buffers[Buffer.VBUF]
    spa = mbuf[SPA:SPA + ROWS * COLS]
    np.testing.assert_array_equal(spa, mbuf[SPA_SEPARATE:SPA_SEPARATE + ROWS * COLS])
    assert (spa.reshape(ROWS, COLS).sum(axis=1) > 0).all()
    if prob:
        got = vbuf[PROB:PROB + ROWS * COLS]
        assert got.tobytes() == vbuf[PAM:PAM + ROWS * COLS].tobytes()  # bit for bit
        assert np.isfinite(got).all() and got.max() > 0
    else:  # nothing but SPA written: the prob region keeps its zeros
        assert not vbuf[PROB:PROB + ROWS * COLS].any()


@pytest.mark.parametrize("mask, prob", [("none", True), ("block", False), ("block", True)])
def test_cost_and_traffic_equal_a_hand_computation(mask: str, prob: bool) -> None:
    instr = _scores_instruction(mask, causal=False, prob=prob)
    m = _machine([instr], mask)
    work = m.step(0, instr)
    scores = ROWS * COLS
    rank_passes = 1 + (mask != "none")  # DEQUANT's multiply, the mask's add
    passes = rank_passes + (SFU_PASSES["softmax"] if prob else 0)
    compares = scores * math.ceil(math.log2(K + 1))  # 350 x 4
    assert (work.sfu_elements, work.compare_ops) == (scores * passes, compares)
    lanes, topk_lanes = CFG.bpu_lanes, CFG.topk_lanes
    expected = max(math.ceil(scores * passes / lanes),
                   math.ceil(scores * rank_passes / lanes) + math.ceil(compares / topk_lanes)) + 1
    assert INSTRUCTION_SPECS["pam_scores"].cost(instr.fields, CFG, work) == expected
    # Every operand once: the int32 products, the scale vector, two scalars, the mask rows;
    # writes: the SPA bytes and (cosprob) the FP32 prob rows. No FP32 PAM goes through VBUF.
    mask_bytes = 4 * scores if mask == "block" else 0
    assert work.sram_read_bytes == {"acc": 4 * scores, "vbuf": 4 * COLS + 8 + mask_bytes}
    assert work.sram_write_bytes == ({"mbuf": scores, "vbuf": 4 * scores} if prob
                                     else {"mbuf": scores})


def test_fewer_vbuf_bytes_than_the_separate_instructions() -> None:
    """The energy the score path saves: the separate form writes and re-reads the FP32 PAM
    (DEQUANT w, ADD r r w, TOPK r, SOFTMAX r w); the fused one reads the mask, writes probs."""
    model = EnergyModel.from_config(CFG)
    fused = _scores_instruction("block", False, True)
    separate = _separate_instructions("block", False, True)
    m = _machine([fused, *separate], "block")
    works = [m.step(i, instr) for i, instr in enumerate([fused, *separate])]

    def vbuf_pj(ws) -> float:
        return sum(w.sram_read_bytes.get("vbuf", 0) * model.sram_read_pj_per_byte["vbuf"]
                   + w.sram_write_bytes.get("vbuf", 0) * model.sram_write_pj_per_byte["vbuf"]
                   for w in ws)

    scores_bytes = 4 * ROWS * COLS
    separate_vbuf = sum(w.sram_read_bytes.get("vbuf", 0) + w.sram_write_bytes.get("vbuf", 0)
                        for w in works[1:])
    assert separate_vbuf == 7 * scores_bytes + 4 * COLS + 8
    assert vbuf_pj(works[:1]) < vbuf_pj(works[1:]) / 3


def test_more_keys_kept_than_the_row_has_is_rejected() -> None:
    instr = Instruction.make("pam_scores", spa_addr=SPA, src_addr=ACC, rows=2, cols=4, k=5,
                             scale_addr=SCALE)
    with pytest.raises(ProgramError, match="field 'k' = 5 > cols 4"):
        validate_program(Program([instr, Instruction.make("halt")], CFG.hash))
