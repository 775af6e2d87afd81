"""SpAtten's pruning hardware in the ISA table: SPATTEN_TOPK and SPATTEN_SCORE, registered with
`isa_table.register_instruction` by `register()`, which runtime/isa.py calls when imported.
Numerics: runtime/spatten_kernels.py (Wang et al., HPCA 2021).

- SPATTEN_TOPK (PREDICT queue, TOPK unit): one batch element's start of a layer. The top-k
  engine (paper section 4.2; TopK.scala in mit-han-lab/spatten: a quick-select over the
  scores) keeps ceil(token_keep * alive) tokens and ceil(head_keep * alive) heads of the
  accumulated scores; writes the token and head keep vectors and the [H, L, L] element mask
  the masked ATTN_QK / SOFTMAX / ATTN_PV read (pruned rows and heads: all zero, so no MACs),
  and the scores row with pruned entries -inf.
- SPATTEN_SCORE (PREDICT queue, BPU): one head's importance over query rows [first_row,
  first_row + rows) (all L rows, or one query tile at long sequences: spatten_kernels
  accumulates row by row, so tiles in order give the bits of the whole). Probabilities from
  the MSBs of Q and K, rows peaking below requant_threshold recomputed with the LSBs
  re-fetched from DRAM (progressive quantization, section 3.4), accumulated into the token
  scores (column sums) and the head score (sum |P V|). Opcode 0x37 was its whole-head form
  (heads / head fields, no rows); it is retired so that an older binary fails to decode.

Costs are our model: TOPK: 2 compares per alive token and head (quick-select's expected
count) on the TOPK lanes; SCORE: per kept query row of the tile, L*d MSB products (+ L*d
more when it re-fetches) + L*dv (P V) as BPU shift-adds and softmax's passes per score as
element operations, so the tiles of a head add up to the whole head; the LSB re-fetch is
charged as DRAM read bytes (LSB_BITS / 8 per code): each refetched row's Q LSBs, and, once per
instruction with any refetched row, the LSBs of the kept K rows, which stay on chip for the
tile's other refetched rows (a head scored in two tiles may fetch them twice).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import spatten_kernels
from .isa_costs import SFU_PASSES, bpu_cost, topk_cost
from .isa_extension import additive_mask_fields, additive_mask_operand, addr, dim, field_value, \
    flag, one, register_once, stride, vector
from .isa_fields import DIM_BITS, FLOAT_BITS, Buffer, FieldKind, FieldSpec, Queue, Unit, \
    bits_float
from .isa_spec import Operand
from .isa_table import define_instruction

TOPK_OPCODE = 0x36
SCORE_OPCODE = 0x3B
HEAD_DIM_BITS = 10
"""SPATTEN_SCORE's d and dv (up to 1023: with the query tile's fields the 320-bit word holds
311 bits)."""


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
    if not f["no_mask"]:  # (long sequences: the attention expands rows with SPATTEN_MASK)
        machine.view("mask_addr")[...] = spatten_kernels.element_mask(
            tokens, kept, length).reshape(heads, length * length).astype(np.uint8)
    alive = length + heads if prev[0] is None else int(np.isfinite(prev[0]).sum()
                                                        + np.isfinite(prev[1]).sum())
    machine.work.compare_ops = 2 * alive
    machine.work.mask_total = length + heads
    machine.work.mask_kept = int(tokens.sum() + kept.sum())


def _score(machine, f: Mapping[str, int]) -> None:
    length, d, dv, first, rows = f["length"], f["d"], f["dv"], f["first_row"], f["rows"]
    if first + rows > length:
        raise machine.fail(f"query rows [{first}, {first + rows}) outside {length} rows")
    scores = machine.view("scores_addr", "r")[0].copy()
    head_score = machine.view("head_score_addr", "r")[0].copy()
    add = machine.view("add_mask_addr").astype(np.float32) if f["has_add_mask"] else None
    visible = None
    if f["causal"]:
        visible = np.arange(length)[None, :] <= np.arange(first, first + rows)[:, None]
    kept = int(np.isfinite(scores).sum())
    kept_rows = int(np.isfinite(scores[first:first + rows]).sum())
    refetched = spatten_kernels.score_rows(
        scores, head_score, first, machine.view("q_addr"), machine.view("k_addr"),
        machine.view("v_addr"), np.float32(bits_float(f["score_scale"])), add, visible,
        bits_float(f["requant_threshold"]))
    machine.view("scores_addr", "w")[0] = scores
    machine.view("head_score_addr", "w")[0] = head_score
    if not np.isfinite(head_score[0]):
        return
    machine.work.shift_adds = kept_rows * kept * (d + dv) + refetched * kept * d
    machine.work.sfu_elements = kept_rows * kept * SFU_PASSES["softmax"]
    k_lsbs = kept if refetched else 0
    machine.work.dram_read_bytes = (refetched + k_lsbs) * d * spatten_kernels.LSB_BITS // 8
    machine.work.rows_total, machine.work.rows_executed = rows, refetched


SPATTEN_TOPK = define_instruction(
    "spatten_topk", TOPK_OPCODE, Queue.PREDICT, Unit.TOPK, (
        addr("scores_addr", "VBUF: accumulated token scores, 1 x length f32"),
        addr("head_scores_addr", "VBUF: accumulated head scores, 1 x heads f32"),
        flag("has_prev", "scores exist (not the first pruned layer)"),
        addr("out_scores_addr", "VBUF: scores with pruned tokens -inf"),
        addr("out_head_scores_addr", "VBUF: head scores with pruned heads -inf"),
        addr("tokens_addr", "MBUF: token keep vector, length bytes"),
        addr("heads_addr", "MBUF: head keep vector, heads bytes"),
        addr("mask_addr", "MBUF: heads x length x length element mask"),
        dim("length"), dim("heads"),
        FieldSpec("token_keep", FLOAT_BITS, FieldKind.FLOAT32, doc="fraction of alive tokens kept"),
        FieldSpec("head_keep", FLOAT_BITS, FieldKind.FLOAT32, doc="fraction of alive heads kept"),
        FieldSpec("protect", DIM_BITS, doc="the first `protect` tokens are never pruned"),
        flag("no_mask", "write the keep vectors only (runtime/isa_spatten_mask.py expands rows)"),
    ), (
        vector("scores_addr", Buffer.VBUF, field_value("length"), "r", enabled_by="has_prev"),
        vector("head_scores_addr", Buffer.VBUF, field_value("heads"), "r", enabled_by="has_prev"),
        vector("out_scores_addr", Buffer.VBUF, field_value("length"), "w"),
        vector("out_head_scores_addr", Buffer.VBUF, field_value("heads"), "w"),
        vector("tokens_addr", Buffer.MBUF, field_value("length"), "w"),
        vector("heads_addr", Buffer.MBUF, field_value("heads"), "w"),
        Operand("mask_addr", Buffer.MBUF, lambda f: 0 if f["no_mask"] else f["heads"],
                lambda f: f["length"] ** 2, "w"),
    ), topk_cost,
    """tokens, heads, scores', head_scores' = spatten_kernels.begin_layer(scores, head_scores,
    token_keep, head_keep, protect) (everything kept, scores 0 without has_prev); mask[h, r, c] =
    heads[h] & tokens[r] & tokens[c] unless no_mask.""")

SPATTEN_SCORE = define_instruction(
    "spatten_score", SCORE_OPCODE, Queue.PREDICT, Unit.BPU, (
        addr("scores_addr", "VBUF: token scores, 1 x length f32, updated"),
        addr("head_score_addr", "VBUF: the scored head's score, 1 f32, updated"),
        addr("q_addr", "ABUF: Q codes of the query rows, rows x d int8"),
        addr("k_addr", "ABUF: K codes, length x d int8"),
        addr("v_addr", "ABUF: V codes, length x dv int8"),
        stride("qk_stride", "Q / K row stride in elements, 0 = packed"),
        stride("v_stride", "V row stride in elements, 0 = packed"),
        dim("length", "keys (and scored tokens)"),
        FieldSpec("first_row", DIM_BITS, doc="first query row scored"),
        dim("rows", "query rows scored"),
        FieldSpec("d", HEAD_DIM_BITS, min_value=1), FieldSpec("dv", HEAD_DIM_BITS, min_value=1),
        FieldSpec("score_scale", FLOAT_BITS, FieldKind.FLOAT32, doc="Q K^T codes -> logit"),
        FieldSpec("requant_threshold", FLOAT_BITS, FieldKind.FLOAT32,
                  doc="rows whose MSB probabilities peak below it re-fetch their LSBs"),
        *additive_mask_fields("rows", "length"),
    ), (
        vector("scores_addr", Buffer.VBUF, field_value("length"), "r"),
        vector("head_score_addr", Buffer.VBUF, one, "r"),
        Operand("q_addr", Buffer.ABUF, field_value("rows"), field_value("d"), "r", "qk_stride"),
        Operand("k_addr", Buffer.ABUF, field_value("length"), field_value("d"), "r", "qk_stride"),
        Operand("v_addr", Buffer.ABUF, field_value("length"), field_value("dv"), "r", "v_stride"),
        additive_mask_operand("rows", "length"),
        vector("scores_addr", Buffer.VBUF, field_value("length"), "w"),
        vector("head_score_addr", Buffer.VBUF, one, "w"),
    ), bpu_cost,
    """spatten_kernels.score_rows(scores, head_score, first_row, Q, K, V, score_scale, add_mask,
    causal, requant_threshold): a kept head adds, row by row, each kept query row's
    probabilities (MSB first, flat rows with all bits) to the kept keys' scores and its
    sum |P V| to the head's score.""")


def register() -> None:
    """Add SPATTEN_TOPK and SPATTEN_SCORE to the ISA table (runtime/isa.py calls it once)."""
    register_once(((SPATTEN_TOPK, _topk), (SPATTEN_SCORE, _score)))
