"""`place "interleave"` (passes/prediction_overlap.py `_placements` / `_spread`): a GEMM's
input LOADs go one per prediction anchor ending at the anchor its GEMM is placed before, not
all in front of that one anchor, so the in-order load queue serves the BPU's code LOADs
between them (BERT-base 512: a K tile's input LOADs held the next BPU's code LOAD 6k cycles);
LOADs that must follow an epilogue go one per anchor after it, the GEMM after the last;
an epilogue is never moved earlier, and program-order semantics hold."""

from __future__ import annotations

from esact_cc.dialects.esact import instruction_op
from esact_cc.dialects.lowering import CYCLES_ATTR
from esact_cc.passes.prediction_overlap import interleave
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.isa import Buffer
from xdsl.dialects.builtin import IntegerAttr, i64

ANCHOR_CYCLES = 1000


def _anchor(k: int):
    """A BPU of the prediction, far from every region the body touches."""
    op = instruction_op("bpu", dst_addr=200_000 + 64 * k, a_buf=Buffer.WBUF, a_addr=900_000,
                        b_buf=Buffer.WBUF, b_addr=900_000, m=1, k=1, n=1)
    op.attributes[CYCLES_ATTR] = IntegerAttr(ANCHOR_CYCLES, i64)
    return op


def _load(buf: Buffer, at: int):
    return instruction_op("load", buf=buf, sram_addr=at, dram_addr=1_000_000 + at, rows=1, cols=64)


def _program():
    """Ten anchors; body: GEMM 1 (about 5.5 anchors long) and GEMM 2 with three LOADs."""
    config = resolve_config(None)
    depth = 5500  # one row tile, one column tile: cycles = depth
    gemm1 = instruction_op("gemm", acc_addr=0, a_addr=0, w_addr=0, m=1, k=depth,
                           n=config.mac_cols)
    inputs = [_load(Buffer.ABUF, 100_000), _load(Buffer.ABUF, 100_064),
              _load(Buffer.WBUF, 400_000)]
    gemm2 = instruction_op("gemm", acc_addr=4096, a_addr=100_000, w_addr=400_000, m=1, k=128,
                           n=config.mac_cols)
    body = [_load(Buffer.WBUF, 0), _load(Buffer.ABUF, 0), gemm1, *inputs, gemm2]
    return config, [_anchor(k) for k in range(10)], body, inputs, gemm2


def test_a_gemms_loads_go_one_per_anchor_before_its_own() -> None:
    config, anchors, body, (a2, a3, w2), gemm2 = _program()
    program = list(anchors)
    interleave(program, set(), body, config)
    at = {id(op): k for k, op in enumerate(program)}
    # GEMM 1 ends at ~5500 cycles: GEMM 2 before anchor 5, its LOADs before anchors 3, 4, 5
    assert at[id(gemm2)] == at[id(anchors[5])] - 1
    assert at[id(anchors[2])] < at[id(a2)] < at[id(anchors[3])] < at[id(a3)] \
        < at[id(anchors[4])] < at[id(w2)] < at[id(anchors[5])]
    assert sorted(at[id(op)] for op in body) == [at[id(op)] for op in body]  # body order kept


def test_loads_sharing_a_region_with_an_epilogue_go_one_per_anchor_after_it() -> None:
    config, anchors, body, (a2, a3, w2), gemm2 = _program()
    # an epilogue QUANT between the two GEMMs writing the ABUF rows GEMM 2's first input
    # LOAD overwrites: the LOADs stay behind it, one per anchor from GEMM 2's expected anchor
    # on, GEMM 2 after the last (BERT-base 512: V's first tile behind K's last epilogue)
    staged = instruction_op("quant", dst_addr=100_000, src_addr=0, rows=1, cols=64, mult=1.0)
    body.insert(body.index(a2), staged)
    program = list(anchors)
    interleave(program, set(), body, config)
    at = {id(op): k for k, op in enumerate(program)}
    assert at[id(anchors[4])] < at[id(staged)] < at[id(anchors[5])] < at[id(a2)] \
        < at[id(anchors[6])] < at[id(a3)] < at[id(anchors[7])] < at[id(w2)] < at[id(gemm2)] \
        < at[id(anchors[8])]
