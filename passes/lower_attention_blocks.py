"""Key-blocked dense attention: the form `passes/lower_attention.py` chooses when not even one
query row over all keys fits on chip, so attention compiles for any length the DRAM holds.

Per batch element, head and query tile, the keys are taken in blocks of a multiple of
`online_softmax.CHUNK` keys, twice:
1. statistics: LOAD + QUANT the K block, ATTN_QK, DEQUANT, SOFTMAX_STATS folds the block into
   each row's running (max, sum) (VBUF, `runtime/isa_online_softmax.py`);
2. output: the same Q K^T and DEQUANT again, SOFTMAX_NORM with the finished state, QUANT P,
   LOAD + QUANT the V block, ATTN_PV accumulating the block's INT32 products in ACC;
then one DEQUANT of the accumulated [tq, dv] and its STORE. The chunked online softmax makes
every probability equal the whole row's (blocks start at chunk multiples), INT32
accumulation over key blocks is exact, so the binary equals the INT8 interpreter bit for bit
with no change to it. The price: Q K^T and its DEQUANT twice, and K (twice) and V reloaded
from DRAM per query tile. Causal attention stops each tile's blocks at its last visible key.
An additive row mask is read at the block's columns; a per-query one has its [tq, block] rows
LOADed and ADDed after each DEQUANT (both sweeps). Row-reuse maps and SPA element masks are
laid out per whole key row and are not blocked: such attention stays a one-line error when its
key rows do not fit. So are per-row probability scales (`p_row_scales`, quantize's default):
a row's scale is its largest probability, which no key block sees whole (the QUANT of each
block takes one multiplier); `probability-scales=tensor` compiles it.
"""

from __future__ import annotations

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.ir_queries import op_label
from esact_cc.passes.attention_inputs import quantize_input_rows
from esact_cc.passes.attention_key_ranges import key_extent
from esact_cc.passes.lower_masked_inputs import MaskRows
from esact_cc.passes.lowering_state import (
    F32,
    HALF,
    OUT_FRACTION,
    Lowering,
    MaskTiles,
    round_tile,
)
from esact_cc.quantized_kernels import (
    attention_output_scale,
    attention_score_scale,
    quant_multiplier,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from esact_cc.runtime.online_softmax import CHUNK, STATE_WORDS

MAX_KEY_BLOCK = 4 * CHUNK
"""Keys per block at most: larger blocks only shrink the query tile, which multiplies the K / V
reloads."""


def add_mask_block(lw: Lowering, mask_rows: MaskRows, scores: int, b: int, h: int, lq: int,
                   lk: int, r0: int, rows: int, k0: int, keys: int) -> None:
    """ADD keys [k0, k0 + keys) of query rows [r0, r0 + rows) of the per-query additive mask
    ([B or 1, H or 1, lq, lk] FP32 in DRAM) to the FP32 scores at `scores` (VBUF)."""
    assert mask_rows.tensor is not None
    shape = mask_rows.shape
    first = (((b % shape[0]) * shape[1] + h % shape[1]) * lq + r0) * lk + k0
    block = lw.alloc(Buffer.VBUF, rows * keys)
    lw.load(Buffer.VBUF, block, mask_rows.tensor.address + first * F32, rows, keys,
            dram_stride=lk * F32)
    lw.emit("add", "sfu", dst_addr=scores, a_addr=scores, b_addr=block, rows=rows, cols=keys)
    lw.free(Buffer.VBUF, block)


def key_block_tiling(lw: Lowering, lq: int, lk: int, d: int, dv: int, per_query: bool
                     ) -> tuple[int, int] | None:
    """(query rows per tile, keys per block) of the key-blocked form, None if not even one
    row over one chunk of keys fits: the block size (a multiple of CHUNK) whose tile holds the
    most scores, the larger block on a tie. ABUF holds Q, a K block and P and V blocks in half of
    it (two P and V blocks: P x V trails a block behind); ACC the scores and the output in
    half; VBUF the FP32 scores (and a per-query mask's block) in a quarter."""
    abuf, acc = lw.capacity(Buffer.ABUF) // HALF, lw.capacity(Buffer.ACC) // HALF
    vbuf = lw.capacity(Buffer.VBUF) // OUT_FRACTION
    best: tuple[int, int] | None = None
    for kb in range(CHUNK, min(MAX_KEY_BLOCK, -(-lk // CHUNK) * CHUNK) + 1, CHUNK):
        n = min(kb, lk)  # keys of the largest block
        limit = min((abuf - n * (d + 2 * dv)) // (d + 2 * n), acc // (n + dv),
                    vbuf // (n * (2 if per_query else 1)))
        if limit >= 1:
            tq = round_tile(limit, lq, lw.config.mac_rows)
            if best is None or tq * kb >= best[0] * best[1]:  # most work per instruction
                best = (tq, kb)
    return best


def lower_key_blocked(lw: Lowering, op: transformer.AttentionOp, rows: MaskTiles | None,
                      spa: MaskTiles | None) -> None:
    """Dense INT8 attention over key blocks (see the module docstring)."""
    q, k, v = (lw.f32_tensor(val, name) for val, name in ((op.q, "q"), (op.k, "k"), (op.v, "v")))
    batch, lq, width = q.shape
    lk = k.shape[1]
    if op.has_positions:
        raise CompileError(f"{op_label(op)}: disentangled attention over {lq}x{lk} needs key "
                           "blocks (not one query row over all keys fits), which do not add "
                           "position scores")
    heads = op.heads
    share = heads // op.key_heads
    d, dv = width // heads, v.shape[2] // op.key_heads
    mask_rows = MaskRows(lw, op, op.mask, batch, heads, lq, lk)
    too_big = f"{op_label(op)}: attention over {lq}x{lk} does not fit the on-chip buffers"
    if rows is not None or spa is not None:
        raise CompileError(f"{too_big} and its row-reuse or SPA mask is not blocked over keys "
                           "(only dense attention is)")
    tiling = key_block_tiling(lw, lq, lk, d, dv, mask_rows.per_query)
    if tiling is None:
        raise CompileError(f"{too_big} (not even one query row over {min(CHUNK, lk)} keys "
                           "fits)")
    if op.p_row_scales is not None:
        raise CompileError(f"{too_big}: its key blocks take one probability scale, not one per "
                           "query row (p_row_scales): quantize with --probability-scales tensor")
    tq, kb = tiling
    causal = op.causal is not None
    s_scale = attention_score_scale(op.scale.value.data, op.q_scale.value.data,
                                    op.k_scale.value.data)
    o_scale = attention_output_scale(op.p_scale.value.data, op.v_scale.value.data)
    s_vec = lw.constant("attention.score_scale", np.full(kb, s_scale, np.float32),
                        ("s", kb, float(s_scale)))
    o_vec = lw.constant("attention.output_scale", np.full(dv, o_scale, np.float32),
                        ("o", dv, float(o_scale)))
    q_mult, k_mult, v_mult, p_mult = (float(quant_multiplier(s)) for s in op.int8_scales())
    s_addr, o_addr = lw.alloc(Buffer.VBUF, kb), lw.alloc(Buffer.VBUF, dv)
    lw.load(Buffer.VBUF, s_addr, s_vec.address, 1, kb)
    lw.load(Buffer.VBUF, o_addr, o_vec.address, 1, dv)

    def scores(b: int, h: int, qa: int, r0: int, k0: int, n: int, tq_now: int) -> int:
        """LOAD + QUANT K block [k0, k0 + n) of head h's K / V head, Q K^T, DEQUANT [, ADD
        the per-query mask's block]: the VBUF address of the FP32 [tq, n] scores."""
        ka = lw.alloc(Buffer.ABUF, n * d)
        quantize_input_rows(lw, op.k, k, b * lk + k0, n, (h // share) * d, d, ka, k_mult)
        acc = lw.alloc(Buffer.ACC, tq_now * n)
        lw.emit("attn_qk", "qk", scores_addr=acc, q_addr=qa, k_addr=ka, lq=tq_now, lk=n, d=d)
        lw.free(Buffer.ABUF, ka)
        f = lw.alloc(Buffer.VBUF, tq_now * n)
        lw.emit("dequant", "sfu", dst_addr=f, src_addr=acc, rows=tq_now, cols=n,
                scale_addr=s_addr)
        lw.free(Buffer.ACC, acc)
        if mask_rows.per_query:
            add_mask_block(lw, mask_rows, f, b, h, lq, lk, r0, tq_now, k0, n)
        return f

    def logit_fields(b: int, h: int, r0: int, k0: int, n: int, tq_now: int
                     ) -> dict[str, int | float]:
        """SOFTMAX_STATS / _NORM fields of key block [k0, k0 + n) of query rows from r0."""
        fields: dict[str, int | float] = {"rows": tq_now, "cols": n, "scale": 1.0}
        if causal:  # key k0 + c is visible to row r0 + r when k0 + c <= r0 + r + lk - lq
            fields.update(causal=1, causal_offset=lk - lq + r0 - k0)
        if mask_rows.present and not mask_rows.per_query:
            fields.update(has_add_mask=1, add_mask_addr=mask_rows.row(b, h) + k0)
        return fields

    for b in range(batch):
        for h in range(heads):
            for r0 in range(0, lq, tq):
                tq_now = min(tq, lq - r0)
                end = key_extent(lq, lk, r0, tq_now) if causal else lk
                blocks = [(k0, min(kb, end - k0)) for k0 in range(0, end, kb)]
                qa = lw.alloc(Buffer.ABUF, tq_now * d)
                quantize_input_rows(lw, op.q, q, b * lq + r0, tq_now, h * d, d, qa, q_mult)
                state = lw.alloc(Buffer.VBUF, tq_now * STATE_WORDS)
                for k0, n in blocks:  # sweep 1: running max and sum
                    f = scores(b, h, qa, r0, k0, n, tq_now)
                    lw.emit("softmax_stats", "sfu", src_addr=f, state_addr=state,
                            accumulate=int(k0 > 0), **logit_fields(b, h, r0, k0, n, tq_now))
                    lw.free(Buffer.VBUF, f)
                out = lw.alloc(Buffer.ACC, tq_now * dv)

                def pv(k0: int, n: int, p: int, va: int) -> None:
                    lw.emit("attn_pv", "pv", out_addr=out, p_addr=p, v_addr=va, lq=tq_now,
                            lk=n, d=dv, accumulate=int(k0 > 0))
                    lw.free(Buffer.ABUF, p, va)

                # Sweep 2: probabilities, P x V accumulated; a block's P x V is issued after
                # the next block's Q K^T, so the MAC array works while the SFU normalizes.
                waiting: tuple[int, int, int, int] | None = None
                for k0, n in blocks:
                    f = scores(b, h, qa, r0, k0, n, tq_now)
                    if waiting is not None:
                        pv(*waiting)
                    va = lw.alloc(Buffer.ABUF, n * dv)
                    quantize_input_rows(lw, op.v, v, b * lk + k0, n, (h // share) * dv, dv, va,
                                        v_mult)
                    lw.emit("softmax_norm", "sfu", dst_addr=f, src_addr=f, state_addr=state,
                            **logit_fields(b, h, r0, k0, n, tq_now))
                    p = lw.alloc(Buffer.ABUF, tq_now * n)
                    lw.emit("quant", "sfu", dst_addr=p, src_addr=f, rows=tq_now, cols=n,
                            mult=p_mult)
                    lw.free(Buffer.VBUF, f)
                    waiting = (k0, n, p, va)
                assert waiting is not None
                pv(*waiting)
                lw.free(Buffer.ABUF, qa)
                lw.free(Buffer.VBUF, state)
                r = lw.alloc(Buffer.VBUF, tq_now * dv)
                lw.emit("dequant", "sfu", dst_addr=r, src_addr=out, rows=tq_now, cols=dv,
                        scale_addr=o_addr)
                lw.free(Buffer.ACC, out)
                lw.write_tile(op.result, r, b * lq + r0, tq_now, h * dv, dv)
                lw.free(Buffer.VBUF, r)
    lw.free(Buffer.VBUF, s_addr, o_addr)
    mask_rows.free()
