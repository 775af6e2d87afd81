"""SpAtten's pruning hardware in the ISA table: SPATTEN_TOPK and SPATTEN_SCORE, registered with
`isa_table.register_instruction` by `register()`, which runtime/isa.py calls when imported.
Numerics: runtime/spatten_kernels.py (Wang et al., HPCA 2021).

- SPATTEN_TOPK (PREDICT queue, TOPK unit): one batch element's start of a layer. The top-k
  engine (paper section 4.2; TopK.scala in mit-han-lab/spatten: a quick-select over the
  scores) keeps ceil(token_keep * alive) tokens and ceil(head_keep * alive) heads of the
  accumulated scores; writes the token and head keep vectors and the [H, L, L] element mask
  the masked ATTN_QK / SOFTMAX / ATTN_PV read (pruned rows and heads: all zero, so no MACs),
  and the scores row with pruned entries -inf.
- SPATTEN_SCORE (PREDICT queue, BPU): one head's importance. Probabilities from the MSBs of Q
  and K, rows peaking below requant_threshold recomputed with the LSBs re-fetched from DRAM
  (progressive quantization, section 3.4), accumulated into the token scores (column sums)
  and the head score (sum |P V|).

Costs are our model: TOPK: 2 compares per alive token and head (quick-select's expected
count) on the TOPK lanes; SCORE: L*L*d MSB products + refetched rows*L*d + L*L*dv (P V) as
BPU shift-adds, softmax's passes per score as element operations; the LSB re-fetch is
charged as DRAM read bytes: per refetched row, the LSBs of its Q row and of every K row
(LSB_BITS / 8 bytes each).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import spatten_kernels
from .isa_costs import SFU_PASSES, bpu_cost, topk_cost
from .isa_fields import DIM_BITS, FLOAT_BITS, SRAM_ADDR_BITS, STRIDE_BITS, Buffer, FieldKind, \
    FieldSpec, Queue, Unit, bits_float
from .isa_spec import Operand
from .isa_table import INSTRUCTION_SPECS, define_instruction, register_instruction

TOPK_OPCODE = 0x36
SCORE_OPCODE = 0x37
HEAD_BITS = 8
"""Head counts and indices of SPATTEN_SCORE (up to 255 heads: the 320-bit word is full)."""


def _addr(name: str, doc: str) -> FieldSpec:
    return FieldSpec(name, SRAM_ADDR_BITS, doc=doc)


def _dim(name: str) -> FieldSpec:
    return FieldSpec(name, DIM_BITS, min_value=1)


def _flag(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, 1, FieldKind.FLAG, doc=doc)


def _f(name: str):
    return lambda f: f[name]


def _one(f: Mapping[str, int]) -> int:
    return 1


def _topk(machine, f: Mapping[str, int]) -> None:
    length, heads = f["length"], f["heads"]
    prev = (machine.vector("scores_addr"), machine.vector("head_scores_addr")) \
        if f["has_prev"] else (None, None)
    tokens, kept, s, hs = spatten_kernels.begin_layer(
        *prev, bits_float(f["token_keep"]), bits_float(f["head_keep"]), length, heads,
        f["protect"])
    machine.view("out_scores_addr", "w")[0] = s
    machine.view("out_head_scores_addr", "w")[0] = hs
    machine.view("tokens_addr")[0] = tokens.astype(np.uint8)
    machine.view("heads_addr")[0] = kept.astype(np.uint8)
    machine.view("mask_addr")[...] = spatten_kernels.element_mask(tokens, kept, length).reshape(
        heads, length * length).astype(np.uint8)
    alive = length + heads if prev[0] is None else int(np.isfinite(prev[0]).sum()
                                                        + np.isfinite(prev[1]).sum())
    machine.work.compare_ops = 2 * alive
    machine.work.mask_total = length + heads
    machine.work.mask_kept = int(tokens.sum() + kept.sum())


def _score(machine, f: Mapping[str, int]) -> None:
    length, d, dv = f["length"], f["d"], f["dv"]
    scores = machine.view("scores_addr", "r")[0].copy()
    head_scores = machine.view("head_scores_addr", "r")[0].copy()
    add = machine.view("add_mask_addr").astype(np.float32) if f["has_add_mask"] else None
    visible = None
    if f["causal"]:
        visible = np.arange(length)[None, :] <= np.arange(length)[:, None]
    kept = int(np.isfinite(scores).sum())
    refetched = spatten_kernels.score_head(
        scores, head_scores, f["head"], machine.view("q_addr"), machine.view("k_addr"),
        machine.view("v_addr"), np.float32(bits_float(f["score_scale"])), add, visible,
        bits_float(f["requant_threshold"]))
    machine.view("scores_addr", "w")[0] = scores
    machine.view("head_scores_addr", "w")[0] = head_scores
    if not np.isfinite(head_scores[f["head"]]):
        return
    machine.work.shift_adds = kept * kept * (d + dv) + refetched * kept * d
    machine.work.sfu_elements = kept * kept * SFU_PASSES["softmax"]
    machine.work.dram_read_bytes = refetched * (kept + 1) * d * spatten_kernels.LSB_BITS // 8
    machine.work.rows_total, machine.work.rows_executed = length, refetched


def _vec(addr: str, buf: Buffer, cols, access: str, **kw) -> Operand:
    return Operand(addr, buf, _one, cols, access, **kw)


SPATTEN_TOPK = define_instruction(
    "spatten_topk", TOPK_OPCODE, Queue.PREDICT, Unit.TOPK, (
        _addr("scores_addr", "VBUF: accumulated token scores, 1 x length f32"),
        _addr("head_scores_addr", "VBUF: accumulated head scores, 1 x heads f32"),
        _flag("has_prev", "scores exist (not the first pruned layer)"),
        _addr("out_scores_addr", "VBUF: scores with pruned tokens -inf"),
        _addr("out_head_scores_addr", "VBUF: head scores with pruned heads -inf"),
        _addr("tokens_addr", "MBUF: token keep vector, length bytes"),
        _addr("heads_addr", "MBUF: head keep vector, heads bytes"),
        _addr("mask_addr", "MBUF: heads x length x length element mask"),
        _dim("length"), _dim("heads"),
        FieldSpec("token_keep", FLOAT_BITS, FieldKind.FLOAT32, doc="fraction of alive tokens kept"),
        FieldSpec("head_keep", FLOAT_BITS, FieldKind.FLOAT32, doc="fraction of alive heads kept"),
        FieldSpec("protect", DIM_BITS, doc="the first `protect` tokens are never pruned"),
    ), (
        _vec("scores_addr", Buffer.VBUF, _f("length"), "r", enabled_by="has_prev"),
        _vec("head_scores_addr", Buffer.VBUF, _f("heads"), "r", enabled_by="has_prev"),
        _vec("out_scores_addr", Buffer.VBUF, _f("length"), "w"),
        _vec("out_head_scores_addr", Buffer.VBUF, _f("heads"), "w"),
        _vec("tokens_addr", Buffer.MBUF, _f("length"), "w"),
        _vec("heads_addr", Buffer.MBUF, _f("heads"), "w"),
        Operand("mask_addr", Buffer.MBUF, _f("heads"), lambda f: f["length"] ** 2, "w"),
    ), topk_cost,
    """tokens, heads, scores', head_scores' = spatten_kernels.begin_layer(scores, head_scores,
    token_keep, head_keep, protect) (everything kept, scores 0 without has_prev); mask[h, r, c] =
    heads[h] & tokens[r] & tokens[c].""")

SPATTEN_SCORE = define_instruction(
    "spatten_score", SCORE_OPCODE, Queue.PREDICT, Unit.BPU, (
        _addr("scores_addr", "VBUF: token scores, 1 x length f32, updated"),
        _addr("head_scores_addr", "VBUF: head scores, 1 x heads f32, updated"),
        _addr("q_addr", "ABUF: Q codes, length x d int8"),
        _addr("k_addr", "ABUF: K codes, length x d int8"),
        _addr("v_addr", "ABUF: V codes, length x dv int8"),
        FieldSpec("qk_stride", STRIDE_BITS, doc="Q / K row stride in elements, 0 = packed"),
        FieldSpec("v_stride", STRIDE_BITS, doc="V row stride in elements, 0 = packed"),
        _dim("length"), _dim("d"), _dim("dv"),
        FieldSpec("heads", HEAD_BITS, min_value=1), FieldSpec("head", HEAD_BITS, doc="the head scored"),
        FieldSpec("score_scale", FLOAT_BITS, FieldKind.FLOAT32, doc="Q K^T codes -> logit"),
        FieldSpec("requant_threshold", FLOAT_BITS, FieldKind.FLOAT32,
                  doc="rows whose MSB probabilities peak below it re-fetch their LSBs"),
        _flag("has_add_mask"),
        _addr("add_mask_addr", "VBUF: additive mask, one row of length (or length x length)"),
        _flag("add_mask_rows", "the additive mask is a length x length block, not one row"),
        _flag("causal"),
    ), (
        _vec("scores_addr", Buffer.VBUF, _f("length"), "r"),
        _vec("head_scores_addr", Buffer.VBUF, _f("heads"), "r"),
        Operand("q_addr", Buffer.ABUF, _f("length"), _f("d"), "r", "qk_stride"),
        Operand("k_addr", Buffer.ABUF, _f("length"), _f("d"), "r", "qk_stride"),
        Operand("v_addr", Buffer.ABUF, _f("length"), _f("dv"), "r", "v_stride"),
        Operand("add_mask_addr", Buffer.VBUF, lambda f: f["length"] if f["add_mask_rows"] else 1,
                _f("length"), "r", enabled_by="has_add_mask"),
        _vec("scores_addr", Buffer.VBUF, _f("length"), "w"),
        _vec("head_scores_addr", Buffer.VBUF, _f("heads"), "w"),
    ), bpu_cost,
    """spatten_kernels.score_head(scores, head_scores, head, Q, K, V, score_scale, add_mask,
    causal, requant_threshold): a kept head adds each kept key's received probability (MSB
    first, flat rows with all bits) to its score and sum |P V| to the head's.""")


def register() -> None:
    """Add SPATTEN_TOPK and SPATTEN_SCORE to the ISA table (runtime/isa.py calls it once)."""
    for spec, kernel in ((SPATTEN_TOPK, _topk), (SPATTEN_SCORE, _score)):
        if spec.name not in INSTRUCTION_SPECS:
            register_instruction(spec, kernel)
