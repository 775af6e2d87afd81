"""Lowering of `spatten.select` (registered with `lowering_state.register_lowering` when this
module is imported: by passes/insert_spatten.py, and by the dialect registry with the `spatten`
dialect for IR read from a file).

Per batch element: the previous layer's scores row and head scores row are loaded into VBUF
(none for the first pruned layer); one SPATTEN_TOPK writes the kept-token and kept-head
vectors, this layer's scores rows (pruned entries -inf) and the [H, L, L] element mask into
MBUF; then, per group of heads, LOAD + QUANT of Q, K, V into ABUF with the attention's own
multipliers and one SPATTEN_SCORE per head (per head and query tile when a per-query additive
mask's [L, L] block is over half of VBUF: the tiles stream its rows, heads stay in order, so
the scores are the whole head's bit for bit); the scores rows are stored for the next layer.
The element masks stay in MBUF as the SPA of the attention (`Lowering.masks`, under both the
tokens and the head_mask value), which reads them like any SPA (passes/lower_attention.py) and
frees them after its last use: pruned rows and heads cost no MACs there.
Long sequences (all masks over half of MBUF): SPATTEN_TOPK writes only the keep vectors
(`no_mask`), which stay in MBUF, and the attention expands each head's query-tile rows with
SPATTEN_MASK (runtime/isa_spatten_mask.py) just before reading them (`MaskTiles.expand`).
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from esact_cc.dialects.spatten import SelectOp
from esact_cc.ir_queries import op_label
from esact_cc.passes.lower_masked_inputs import MaskRows
from esact_cc.passes.lowering_state import F32, HALF, Lowering, MaskTiles, register_lowering, \
    round_tile
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from esact_cc.runtime.sanger_kernels import score_scale
from esact_cc.runtime.spatten_kernels import INT8_BITS


def _load_row(lw: Lowering, value, b: int, cols: int) -> int:
    t = lw.f32_tensor(value, "scores")
    addr = lw.alloc(Buffer.VBUF, cols)
    lw.load(Buffer.VBUF, addr, t.address + b * cols * F32, 1, cols)
    return addr


def lower_select(lw: Lowering, op: Operation) -> None:
    assert isinstance(op, SelectOp)
    q, k, v = lw.f32_tensor(op.q, "q"), lw.f32_tensor(op.k, "k"), lw.f32_tensor(op.v, "v")
    batch, length, width = q.shape
    heads = op.num_heads.value.data
    d, dv = width // heads, v.shape[2] // heads
    block = length * length
    # Long sequences: the keep vectors stay in MBUF and the attention expands the rows of each
    # head and query tile it reads (SPATTEN_MASK) instead of the whole [H, L, L] mask.
    expanded = batch * heads * block > lw.capacity(Buffer.MBUF) // HALF
    if expanded and batch * (length + heads) + 2 * length > lw.capacity(Buffer.MBUF):
        raise CompileError(f"lower-to-esact: {op_label(op)}: SpAtten's keep vectors and two "
                           f"mask rows of {length} keys do not fit MBUF "
                           f"({lw.capacity(Buffer.MBUF)} bytes)")
    tiles = MaskTiles(batch, length, heads,
                      users={u.operation for r in (op.tokens, op.heads) for u in r.uses})
    spa = 0 if expanded else lw.alloc(Buffer.MBUF, batch * heads * block)
    if not expanded:
        tiles.spa = spa
    else:
        tiles.expand = _expand_rows(lw, tiles, length, heads)
    lw.masks[op.tokens] = lw.masks[op.heads] = tiles
    mask_rows = MaskRows(lw, op, op.mask, batch, heads, length, length)
    tile, group = _score_tiling(lw, op, mask_rows, length, heads, d, dv)
    mults = [float(quant_multiplier(getattr(op, s).value.data))
             for s in ("q_scale", "k_scale", "v_scale")]
    common = {"length": length, "d": d, "dv": dv,
              "score_scale": float(score_scale(op.scale.value.data, op.q_scale.value.data,
                                               op.k_scale.value.data, INT8_BITS)),
              "requant_threshold": float(np.float32(op.requant_threshold.value.data)),
              "causal": int(op.causal is not None)}
    for b in range(batch):
        s, hs = lw.alloc(Buffer.VBUF, length), lw.alloc(Buffer.VBUF, heads)
        tok, hd = lw.alloc(Buffer.MBUF, length), lw.alloc(Buffer.MBUF, heads)
        fields = {}
        if op.scores is not None:
            s0, hs0 = _load_row(lw, op.scores, b, length), _load_row(lw, op.head_scores, b, heads)
            fields = {"has_prev": 1, "scores_addr": s0, "head_scores_addr": hs0}
        lw.emit("spatten_topk", "predict", out_scores_addr=s, out_head_scores_addr=hs,
                tokens_addr=tok, heads_addr=hd, mask_addr=spa + b * heads * block,
                length=length, heads=heads, token_keep=float(op.token_keep.value.data),
                head_keep=float(op.head_keep.value.data), protect=op.protect.value.data,
                **({"no_mask": 1} if expanded else {}), **fields)
        if fields:
            lw.free(Buffer.VBUF, s0, hs0)
        if expanded:  # read by SPATTEN_MASK, freed with the masks
            tiles.vectors += [tok, hd]
        else:
            lw.free(Buffer.MBUF, tok, hd)
        for h0 in range(0, heads, group):
            g = min(group, heads - h0)
            qa, ka = lw.alloc(Buffer.ABUF, length * g * d), lw.alloc(Buffer.ABUF, length * g * d)
            va = lw.alloc(Buffer.ABUF, length * g * dv)
            for src, addr, cols, mult in ((q, qa, d, mults[0]), (k, ka, d, mults[1]),
                                          (v, va, dv, mults[2])):
                lw.quantize_rows(src, b * length, length, h0 * cols, g * cols, addr, mult)
            for hh in range(g):
                h = h0 + hh
                for r0 in range(0, length, tile):
                    tq = min(tile, length - r0)
                    extra, streamed = _mask_fields(mask_rows, b, h, r0, tq, tile < length)
                    lw.emit("spatten_score", "predict", scores_addr=s, head_score_addr=hs + h,
                            q_addr=qa + r0 * g * d + hh * d, k_addr=ka + hh * d,
                            v_addr=va + hh * dv, qk_stride=g * d, v_stride=g * dv, first_row=r0,
                            rows=tq, **common, **extra)
                    if streamed is not None:
                        lw.free(Buffer.VBUF, streamed)
            lw.free(Buffer.ABUF, qa, ka, va)
        lw.write_tile(op.new_scores, s, b, 1, 0, length)
        lw.write_tile(op.new_head_scores, hs, b, 1, 0, heads)
        lw.free(Buffer.VBUF, s, hs)
    mask_rows.free()


def _score_tiling(lw: Lowering, op: Operation, mask_rows: MaskRows, length: int, heads: int,
                  d: int, dv: int) -> tuple[int, int]:
    """(query rows per SPATTEN_SCORE, heads per Q / K / V group). All rows, unless a per-query
    additive mask's [L, L] block is over half of VBUF: then tiles of its rows that fit."""
    tile = length
    vbuf = lw.capacity(Buffer.VBUF) // HALF
    if mask_rows.per_query and length * length > vbuf:
        if vbuf < length:
            raise CompileError(f"lower-to-esact: {op_label(op)}: SPATTEN_SCORE: one row of the "
                               f"per-query additive mask ({length} keys) is over half of VBUF")
        tile = round_tile(vbuf // length, length, lw.config.mac_rows)
    per_head = length * (2 * d + dv)
    abuf = lw.capacity(Buffer.ABUF) // HALF
    if per_head > abuf:
        raise CompileError(f"lower-to-esact: {op_label(op)}: SPATTEN_SCORE: one head's Q, K and "
                           f"V codes ({length} rows x {2 * d + dv}) are over half of ABUF "
                           f"({abuf} elements)")
    return tile, max(1, min(heads, abuf // per_head))


def _mask_fields(mask_rows: MaskRows, b: int, h: int, r0: int, rows: int, streamed: bool
                 ) -> tuple[dict[str, int], int | None]:
    """SPATTEN_SCORE's additive-mask fields for query rows [r0, r0 + rows) of head h, and the
    VBUF rows LOADed for this tile alone (streamed per-query mask; the caller frees them)."""
    if mask_rows.per_query and streamed:
        rows_addr = mask_rows.fresh_rows(b, h, r0, rows)
        return {"has_add_mask": 1, "add_mask_rows": 1, "add_mask_addr": rows_addr}, rows_addr
    if mask_rows.per_query:
        return {"has_add_mask": 1, "add_mask_rows": 1, "add_mask_addr": mask_rows.block(b, h)}, None
    if mask_rows.present:
        return {"has_add_mask": 1, "add_mask_addr": mask_rows.row(b, h)}, None
    return {}, None


def _expand_rows(lw: Lowering, tiles: MaskTiles, length: int, heads: int):
    """`MaskTiles.expand` of SpAtten's long form: SPATTEN_MASK from batch element b's keep
    vectors (token vector then head vector in `tiles.vectors`)."""

    def expand(b: int, h: int, first_row: int, rows: int, address: int) -> None:
        tok, hd = tiles.vectors[2 * b], tiles.vectors[2 * b + 1]
        lw.emit("spatten_mask", "predict", tokens_addr=tok, heads_addr=hd, mask_addr=address,
                length=length, heads=heads, head=h, first_row=first_row, rows=rows)
    return expand


register_lowering(SelectOp, lower_select)
