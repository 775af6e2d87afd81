"""Instruction selection for `transformer.attention` (INT8), with or without masks: one
rule, the mask forms are parameters of it (masks: `passes/lower_masked_inputs.py`).

attention: per batch element and head group, LOAD + QUANT of the Q, K, V column blocks (K, V,
then Q when masked: the SPLS lowering produces Q last; with `kv_heads` < heads, grouped-query
attention, the group's K / V blocks are the K / V heads its query heads read: head h reads
K / V head h // (heads / kv_heads)); per head ATTN_QK, DEQUANT (scale
folded), [ADD a per-query mask], SOFTMAX (additive row mask, causal), QUANT P (QUANT_ROWS with
`p_row_scales`: each row's scale into VBUF), ATTN_PV, DEQUANT (times those row scales), STORE; heads are software-pipelined (QK of head h+1 before PV of head h). When one head's [Lq, Lk]
scores do not fit (VBUF quarter, ACC, ABUF with Q, K, V and P), dense attention runs in query
tiles of whole key rows (`_attention_tiling`): K / V stay on chip across a head group's tiles,
each tile's softmax sees all its keys, so nothing is recomputed and the result is unchanged;
attention that fits is one tile (the same program as before tiling existed). The two heads in
flight span query tiles, and the next tile's Q is quantized ahead of this tile's softmax, so
MAC and SFU overlap even with one head per group. Causal attention without row-reuse or SPA
masks takes at least `CAUSAL_TILES` query tiles, each computing over the keys up to its last
row's diagonal only (a per-query mask is added over those columns): the chunked online softmax
(`runtime/online_softmax.py`) gives every row the whole row's probabilities. When not even one
query row over all keys fits, dense attention runs over key blocks
(`passes/lower_attention_blocks.py`). With `rows(%map)`
ATTN_QK / ATTN_PV skip reused rows and SCATTER_ROWS fills them; with `spa(%mask)` the element
mask restricts ATTN_QK, SOFTMAX and ATTN_PV to each row's keys.
"""

from __future__ import annotations

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.ir_queries import op_label
from esact_cc.passes.lower_masked_inputs import (
    MaskRows,
    done_with,
    fail,
    mask_tiles,
    plan_masked_inputs,
    reused_rows_unread,
)
from esact_cc.passes.lowering_state import (
    HALF,
    OUT_FRACTION,
    Lowering,
    MaskTiles,
    round_tile,
    shape_of,
)
from esact_cc.passes.on_chip_activations import output_tile, write_or_keep
from esact_cc.quantized_kernels import (
    attention_output_scale,
    attention_score_scale,
    quant_multiplier,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.passes.attention_inputs import quantize_input_rows
from esact_cc.passes.attention_key_ranges import constant_visibility, tile_key_range
from esact_cc.passes.attention_shared_mask import ResidentMaskTiles
from esact_cc.passes.lower_attention_blocks import add_mask_block, lower_key_blocked
from esact_cc.passes.lower_disentangled import PositionScores
from esact_cc.runtime.isa import Buffer

CAUSAL_TILES = 8
"""Query tiles causal attention is cut into at least (keys above a tile's diagonal skipped:
about 1/2 + 1/16 of the dense Q K^T and P V work with 8)."""
# ----------------------------------------------------------------------------- attention


def lower_attention(lw: Lowering, op: transformer.AttentionOp) -> None:
    """INT8 attention, dense or with row reuse / SPA masks (see the module docstring)."""
    rows, spa = _attention_mask_tiles(lw, op)
    # reused rows take their representative's, unless only rows the same map computes are read
    scattered = None if rows is None or reused_rows_unread(op.result, op.rows) else rows
    q, k, v = (lw.f32_tensor(val, name) for val, name in ((op.q, "q"), (op.k, "k"), (op.v, "v")))
    batch, lq, width = q.shape
    lk, width_v = k.shape[1], v.shape[2]
    heads, kv_heads = op.heads, op.key_heads
    share = heads // kv_heads  # query heads per K / V head (> 1: grouped-query; verified)
    d, dv = width // heads, width_v // kv_heads
    out_width = shape_of(op.result)[-1]
    causal = op.causal is not None
    if not _tile_fits(lw, 1, lq, lk, d, dv, spa):
        lower_key_blocked(lw, op, rows, spa)  # not one query row over all keys fits
        return
    s_scale = attention_score_scale(op.scale.value.data, op.q_scale.value.data, op.k_scale.value.data)
    # Per-row probability scales: QUANT_ROWS writes them, the output DEQUANT reads them after
    # the column scale, which is then v_scale alone.
    row_scaled = op.p_row_scales is not None
    p_scale = 1.0 if row_scaled else op.p_scale.value.data
    o_scale = attention_output_scale(p_scale, op.v_scale.value.data)
    s_vec = lw.constant("attention.score_scale", np.full(lk, s_scale, np.float32), ("s", lk, float(s_scale)))
    o_vec = lw.constant("attention.output_scale", np.full(dv, o_scale, np.float32), ("o", dv, float(o_scale)))
    q_mult, k_mult, v_mult, p_mult = (quant_multiplier(s) for s in (*op.int8_scales()[:3], p_scale))
    lk_all = lk
    window, skip_keys, per_row = _key_skipping(lw, op, lq, lk, rows, spa)
    q_tile, group = _attention_tiling(lw, op, lq, lk, d, dv, rows, spa, skip_keys and per_row)
    # Query tiles with row reuse: a reused row's representative may lie in an earlier tile,
    # so each head's [lq, dv] output stays in VBUF until its last tile, then SCATTER_ROWS.
    whole_heads: dict[int, int] = {}
    spa_rows = SpaRows(lw, spa, heads, lq, lk)
    s_addr = lw.alloc(Buffer.VBUF, lk)
    lw.load(Buffer.VBUF, s_addr, s_vec.address, 1, lk)
    o_addr = lw.alloc(Buffer.VBUF, dv)
    lw.load(Buffer.VBUF, o_addr, o_vec.address, 1, dv)
    mask_rows = MaskRows(lw, op, op.mask, batch, heads, lq, lk)
    positions = PositionScores(lw, op, lk, d)  # DeBERTa's c2p / p2c terms (none: no work)

    def masks_of(b: int, h: int, r0: int, tq: int) -> dict[str, int]:
        """ATTN_QK / ATTN_PV mask fields of batch element b, head h, query rows [r0, r0 + tq)."""
        fields = {}
        if rows is not None:
            fields.update(has_row_mask=1, row_mask_addr=rows.row_mask + b * lq + r0)
        if spa is not None:
            fields.update(has_mask=1, mask_addr=spa_rows.tile(b, h, r0, tq))
        return fields

    def kept_rows(b: int, r0: int) -> dict[str, int]:
        """Row-mask fields of the SFU steps on query rows from r0 of batch element b: with row
        reuse they run on the computed rows only (a reused row's scores, P and output are read
        by nothing: ATTN_PV skips it, SCATTER_ROWS or O's row mask takes its representative's)."""
        return {} if rows is None else {"has_row_mask": 1,
                                        "row_mask_addr": rows.row_mask + b * lq + r0}

    def kv_heads_of(h0: int, g: int) -> tuple[int, int]:
        """(first K / V head, K / V heads) that query heads [h0, h0 + g) read."""
        return h0 // share, (h0 + g - 1) // share - h0 // share + 1

    def keys_of(r0: int, tq: int) -> tuple[int, int]:
        """(first key, keys) query rows [r0, r0 + tq) compute over (`tile_key_range`)."""
        return tile_key_range(lq, lk, r0, tq, causal, window) if skip_keys else (0, lk)

    def pv(b: int, h0: int, g: int, r0: int, tq: int, hh: int, p_tile: tuple[int, int | None],
           va: int) -> None:
        """P x V of head hh of the group over query rows [r0, r0 + tq), dequantized (times
        P's row scales, if any) and stored into its column block."""
        h = h0 + hh
        kv0, kvg = kv_heads_of(h0, g)
        acc = lw.alloc(Buffer.ACC, tq * dv)
        k0, n = keys_of(r0, tq)
        p, p_rows = p_tile
        row_scale = {} if p_rows is None else {"has_row_scale": 1, "row_scale_addr": p_rows}
        lw.emit("attn_pv", "pv", out_addr=acc, p_addr=p,
                v_addr=va + (h // share - kv0) * dv + k0 * kvg * dv, lq=tq, lk=n, d=dv,
                v_stride=kvg * dv, **masks_of(b, h, r0, tq))
        lw.free(Buffer.ABUF, p)
        spa_rows.done(b, h, r0)
        if scattered is not None and tq < lq:
            if r0 == 0:
                whole_heads[hh] = lw.alloc(Buffer.VBUF, lq * dv)
            r = whole_heads[hh]
            lw.emit("dequant", "sfu", dst_addr=r + r0 * dv, src_addr=acc, rows=tq, cols=dv,
                    scale_addr=o_addr, **row_scale, **kept_rows(b, r0))
            lw.free(Buffer.ACC, acc)
            if p_rows is not None:
                lw.free(Buffer.VBUF, p_rows)
            if r0 + tq == lq:  # the head's last tile: every representative is computed
                lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=r, src_addr=r, rows=lq,
                        cols=dv, map_addr=rows.reuse_map + 2 * lq * b)
                lw.write_tile(op.result, r, b * lq, lq, h * dv, dv)
                lw.free(Buffer.VBUF, whole_heads.pop(hh))
            return
        # the head's column block of the result's kept region (rows out_width apart), if any
        r = output_tile(lw, op.result, b * lq + r0, tq, h * dv, dv, strided=True)
        kept_at = lw.on_chip is not None and lw.on_chip.region_of(op.result, r) is not None
        stride = {"dst_stride": out_width} if kept_at and dv < out_width else {}
        lw.emit("dequant", "sfu", dst_addr=r, src_addr=acc, rows=tq, cols=dv, scale_addr=o_addr,
                **row_scale, **kept_rows(b, r0), **stride)
        lw.free(Buffer.ACC, acc)
        if p_rows is not None:
            lw.free(Buffer.VBUF, p_rows)
        if scattered is not None:
            lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=r, src_addr=r, rows=tq,
                    cols=dv, map_addr=rows.reuse_map + 2 * lq * b,
                    **({"src_stride": out_width} if stride else {}), **stride)
        if not write_or_keep(lw, op.result, r, b * lq + r0, tq, h * dv, dv):
            lw.free(Buffer.VBUF, r)

    def scores_to_p(b: int, h: int, scores: int, r0: int, tq: int,
                    q_rows: tuple[int, int], k_rows: tuple[int, int],
                    shared_mask: int | None) -> tuple[int, int | None]:
        """DEQUANT, [position scores], [per-query mask], SOFTMAX and QUANT (QUANT_ROWS with
        per-row probability scales) of query rows [r0, r0 + tq) of head h (q_rows / k_rows:
        its Q and K in ABUF, address and stride; shared_mask: the tile's mask rows the
        group's heads share, if LOADed once): the ABUF address of P and the VBUF address of
        its row scales (None without)."""
        k0, lk = keys_of(r0, tq)
        f = lw.alloc(Buffer.VBUF, tq * lk)
        kept = kept_rows(b, r0)  # the SFU steps; the position / blocked mask terms: all rows
        lw.emit("dequant", "sfu", dst_addr=f, src_addr=scores, rows=tq, cols=lk, scale_addr=s_addr,
                **kept)
        lw.free(Buffer.ACC, scores)
        positions.add(f, h, r0, tq, k0, lk, q_rows, k_rows)
        extra = ({} if spa is None else
                 {"has_elem_mask": 1, "elem_mask_addr": spa_rows.tile(b, h, r0, tq)})
        if mask_rows.per_query and lk < lk_all:
            add_mask_block(lw, mask_rows, f, b, h, lq, lk_all, r0, tq, k0, lk)
        elif shared_mask is not None:
            lw.emit("add", "sfu", dst_addr=f, a_addr=f, b_addr=shared_mask, rows=tq, cols=lk,
                    **kept)
        elif mask_rows.per_query:
            mask_rows.add_fresh_block(b, h, f, r0, tq, kept=kept)
        elif mask_rows.present:
            extra.update(has_add_mask=1, add_mask_addr=mask_rows.row(b, h) + k0)
        # Causal: key k0 + c is visible to query row r0 + r when k0 + c <= r + r0 + lk - lq.
        causal_fields = {"causal": int(causal),
                         "causal_offset": lk_all - lq + r0 - k0 if causal else 0}
        lw.emit("softmax", "sfu", dst_addr=f, src_addr=f, rows=tq, cols=lk, scale=1.0,
                **causal_fields, **extra, **kept)
        p = lw.alloc(Buffer.ABUF, tq * lk)
        p_rows = lw.alloc(Buffer.VBUF, tq) if row_scaled else None
        if p_rows is not None:
            lw.emit("quant_rows", "sfu", dst_addr=p, src_addr=f, rows=tq, cols=lk, scale_addr=p_rows,
                    **kept)
        else:
            lw.emit("quant", "sfu", dst_addr=p, src_addr=f, rows=tq, cols=lk, mult=float(p_mult),
                    **kept)
        lw.free(Buffer.VBUF, f)
        return p, p_rows

    q_tiles = [(r0, min(q_tile, lq - r0)) for r0 in range(0, lq, q_tile)]
    # A per-query mask every head reads alike ([B, 1, Lq, Lk]): each tile's rows are LOADed
    # once for the group's heads, and the first tiles once for all the groups (the top-k
    # attention at long sequences was bound by those reLOADs).
    shared = ResidentMaskTiles(lw, mask_rows, q_tiles, (lk_all, dv), (heads, group),
                               resident=not skip_keys)
    for b in range(batch):
        shared.begin_batch()
        for h0 in range(0, heads, group):
            g = min(group, heads - h0)
            kv0, kvg = kv_heads_of(h0, g)
            # (first query row, rows, head in group, (P, its row scales)) waiting for P x V:
            # two heads in flight, across query tiles too (QK of the next tile's first head
            # runs before PV of this tile's last one, so one head per group also overlaps MAC
            # and SFU).
            pending: list[tuple[int, int, int, tuple[int, int | None]]] = []
            q_next = 0  # ABUF address of the next tile's Q, quantized ahead
            for i, (r0, tq) in enumerate(q_tiles):
                # K / V stay on chip across the query tiles; the first tile loads them with Q.
                # The next tile's Q is quantized now, ahead of this tile's softmax in the
                # in-order SFU queue, so its Q K^T need not wait for that softmax.
                if r0 == 0:
                    qa = lw.alloc(Buffer.ABUF, tq * g * d)
                    ka = lw.alloc(Buffer.ABUF, lk * kvg * d)
                    va = lw.alloc(Buffer.ABUF, lk * kvg * dv)
                    _quantize_loads(lw, b, _first_tile_loads(
                        op, ((op.q, q), r0, tq, lq, d, qa, q_mult, h0, g),
                        ((op.k, k), 0, lk, lk, d, ka, k_mult, kv0, kvg),
                        ((op.v, v), 0, lk, lk, dv, va, v_mult, kv0, kvg)))
                else:
                    qa = q_next
                if i + 1 < len(q_tiles):
                    r1, t1 = q_tiles[i + 1]
                    q_next = lw.alloc(Buffer.ABUF, t1 * g * d)
                    _quantize_loads(lw, b, [((op.q, q), r1, t1, lq, d, q_next, q_mult, h0, g)])
                shared_mask = shared.rows(b, h0, r0, tq, keys_of(r0, tq)[1] == lk_all)
                for hh in range(g):
                    h = h0 + hh
                    k0, n = keys_of(r0, tq)
                    scores = lw.alloc(Buffer.ACC, tq * n)
                    k_rows = (ka + (h // share - kv0) * d + k0 * kvg * d, kvg * d)
                    lw.emit("attn_qk", "qk", scores_addr=scores, q_addr=qa + hh * d,
                            k_addr=k_rows[0], lq=tq, lk=n, d=d,
                            q_stride=g * d,
                            k_stride=kvg * d, **masks_of(b, h, r0, tq))
                    pending.append((r0, tq, hh, scores_to_p(b, h, scores, r0, tq,
                                                            (qa + hh * d, g * d), k_rows,
                                                            shared_mask)))
                    if len(pending) == 2:
                        pv(b, h0, g, *pending.pop(0), va)
                shared.release(r0, shared_mask)
                if r0 + tq == lq:  # the group's last tile: every P x V before K / V go
                    for item in pending:
                        pv(b, h0, g, *item, va)
                    pending.clear()
                    lw.free(Buffer.ABUF, qa, ka, va)
                else:
                    lw.free(Buffer.ABUF, qa)
        shared.end_batch()
    positions.free()
    _release_scale_rows(lw, op, mask_rows, s_addr, o_addr)
    done_with(lw, op, *(t for t in (rows, spa) if t is not None))


def _release_scale_rows(lw: Lowering, op: transformer.AttentionOp, mask_rows: MaskRows,
                        s_addr: int, o_addr: int) -> None:
    """Free the mask rows and the score / output scale rows. Release order picks the next VBUF
    regions: each form keeps the order it always had."""
    if op.is_masked:
        mask_rows.free()
        lw.free(Buffer.VBUF, s_addr, o_addr)
    else:
        lw.free(Buffer.VBUF, s_addr, o_addr)
        mask_rows.free()


def _key_skipping(lw: Lowering, op: transformer.AttentionOp, lq: int, lk: int,
                  rows: MaskTiles | None, spa: MaskTiles | None
                  ) -> tuple[np.ndarray | None, bool, bool]:
    """(constant mask's visibility, whether tiles skip keys, whether the skipped keys vary per
    query row). Keys no row of a query tile sees (above the causal diagonal, outside a
    constant mask's window) are skipped where no mask is laid out per key row (a per-query
    additive mask is added over the tile's computed columns only); only keys that vary per
    row (a diagonal, a band) pay for more query tiles."""
    causal = op.causal is not None
    window = constant_visibility(lw, op, lq, lk)
    skip = (causal or window is not None) and rows is None and spa is None
    per_row = causal or (window is not None and not (window == window[:1]).all())
    return window, skip, per_row


def _attention_mask_tiles(lw: Lowering, op: transformer.AttentionOp
                          ) -> tuple[MaskTiles | None, MaskTiles | None]:
    """(row-reuse tiles, SPA tiles) the attention reads, None where it has no such mask;
    places the masked form's inputs first."""
    if op.is_masked:
        plan_masked_inputs(lw, op)
    rows = None if op.rows is None else mask_tiles(lw, op, op.rows, "rows")
    # SpAtten's token / head masks arrive as the SPA passes/lower_spatten.py expanded them to.
    spa_value = next((m for m in (op.spa, op.tokens, op.head_mask) if m is not None), None)
    if spa_value is not None and spa_value is not op.spa and spa_value not in lw.masks:
        raise fail(op, "its tokens / head_mask come from no lowered spatten.select")
    spa = None if spa_value is None else mask_tiles(lw, op, spa_value, "spa")
    if spa is not None and spa.spa is None and spa.spa_dram is None and spa.expand is None:
        raise fail(op, "its SPA mask is neither on chip, nor spilled to DRAM, nor expandable")
    return rows, spa


class SpaRows:
    """The element mask rows of one head and query tile: in MBUF where the whole SPA is, else
    LOADed from the DRAM copy (`MaskTiles.spa_dram`) or expanded on chip by the scheme
    (`MaskTiles.expand`: SpAtten's SPATTEN_MASK) at the head's ATTN_QK, and freed after its
    ATTN_PV (two heads are in flight: QK of head h + 1 runs before PV of head h)."""

    def __init__(self, lw: Lowering, spa: MaskTiles | None, heads: int, lq: int, lk: int):
        self.lw, self.spa, self.heads, self.lq, self.lk = lw, spa, heads, lq, lk
        self.loaded: dict[tuple[int, int, int], int] = {}

    def tile(self, b: int, h: int, r0: int, tq: int) -> int:
        assert self.spa is not None
        first = ((b * self.heads + h) * self.lq + r0) * self.lk
        if self.spa.spa is not None:
            return self.spa.spa + first
        key = (b, h, r0)
        if key not in self.loaded:
            addr = self.lw.alloc(Buffer.MBUF, tq * self.lk)
            if self.spa.expand is not None:  # built on chip from the scheme's compact state
                self.spa.expand(b, h, r0, tq, addr)
            else:
                assert self.spa.spa_dram is not None
                self.lw.load(Buffer.MBUF, addr, self.spa.spa_dram.address + first, tq, self.lk)
            self.loaded[key] = addr
        return self.loaded[key]

    def done(self, b: int, h: int, r0: int) -> None:
        addr = self.loaded.pop((b, h, r0), None)
        if addr is not None:
            self.lw.free(Buffer.MBUF, addr)


def _first_tile_loads(op: transformer.AttentionOp, q_load: tuple, k_load: tuple,
                      v_load: tuple) -> list[tuple]:
    """The Q, K, V loads of a head group's first query tile, in issue order."""
    if op.is_masked:
        # Q last: the sparse lowering produces it after K and V (beside the prediction), so
        # the in-order load queue fetches K and V while Q's last GEMMs still run.
        return [k_load, v_load, q_load]
    return [q_load, k_load, v_load]


def _quantize_loads(lw: Lowering, b: int, loads: list[tuple]) -> None:
    """Each ((value, FP32 tensor), first row, rows, rows per batch element, head width, ABUF
    address, multiplier, first head, heads) column block of batch element b, quantized into
    ABUF (passes/attention_inputs.py: LOADed as INT8 when its producer wrote that copy)."""
    for (value, src), row0, count_rows, length, cols, addr, mult, first, count in loads:
        quantize_input_rows(lw, value, src, b * length + row0, count_rows, first * cols,
                            count * cols, addr, mult)


def _tile_fits(lw: Lowering, tq: int, lq: int, lk: int, d: int, dv: int,
               spa: MaskTiles | None) -> bool:
    """Whether tq of lq query rows over all lk keys fit: the Q tile (and the next one, loaded
    ahead, when tq < lq), K, V, two heads' P in ABUF, the scores
    in a VBUF quarter and half the ACC; spilled SPA rows: two heads' tiles in flight in the
    MBUF ring, in one free run (live masks split the free MBUF: its total may hold 3 tiles
    when no run holds one): with one tile live anywhere in the run, the larger of the gaps it
    leaves holds another only if the run is 3 tiles long."""
    abuf, vbuf, acc = (lw.capacity(Buffer.ABUF), lw.capacity(Buffer.VBUF) // OUT_FRACTION,
                       lw.capacity(Buffer.ACC) // HALF)
    spilled = spa is not None and spa.spa is None
    q_tiles = 1 if tq >= lq else 2
    return ((q_tiles * tq + lk) * d + lk * dv + 2 * tq * lk <= abuf and tq * lk <= min(vbuf, acc)
            and (not spilled or 3 * tq * lk <= lw.room(Buffer.MBUF)))


def _attention_tiling(lw: Lowering, op: transformer.AttentionOp, lq: int, lk: int, d: int,
                      dv: int, rows: MaskTiles | None, spa: MaskTiles | None,
                      skip_keys: bool) -> tuple[int, int]:
    """(query rows per tile, heads per group). All lq rows when one head's Q, K, V, P and its
    [lq, lk] scores (and SPA rows LOADed from DRAM, two heads in flight) fit; else query tiles
    of whole key rows (each row's softmax still sees all its keys: no recomputation, K / V stay
    on chip across the tiles). Attention that skips keys (causal, a constant window) takes at
    least CAUSAL_TILES tiles (causal tile i then computes over (i + 1) / CAUSAL_TILES of the
    keys).
    Row reuse over query tiles keeps each head's [lq, dv] output in VBUF (a reused row's
    representative may lie in any earlier tile), which bounds the group: outputs share a VBUF
    quarter, or one head's takes half of VBUF beside smaller query tiles."""
    abuf, vbuf, acc = (lw.capacity(Buffer.ABUF), lw.capacity(Buffer.VBUF) // OUT_FRACTION,
                       lw.capacity(Buffer.ACC) // HALF)
    spilled = spa is not None and spa.spa is None
    if _tile_fits(lw, lq, lq, lk, d, dv, spa):
        tq = lq
    else:
        limit = min((abuf - lk * (d + dv)) // (2 * d + 2 * lk), vbuf // lk, acc // lk,
                    lw.room(Buffer.MBUF) // (3 * lk) if spilled else lq)
        assert limit >= 1  # else the key-blocked form was chosen
        tq = round_tile(limit, lq, lw.config.mac_rows)
        assert _tile_fits(lw, tq, lq, lk, d, dv, spa)
    if skip_keys and lq > lw.config.mac_rows:
        tq = min(tq, round_tile(max(lw.config.mac_rows, lq // CAUSAL_TILES), lq,
                                lw.config.mac_rows))
    per_head = ((1 if tq == lq else 2) * tq + lk) * d + lk * dv  # Q tiles, K, V
    budget = abuf // HALF
    if lw.group is not None:  # lowered beside an SPLS projection: the ABUF it leaves
        budget = min(budget, lw.room(Buffer.ABUF) // HALF)
    group = max(1, min(op.heads, budget // per_head))
    if rows is not None and tq < lq:
        whole = vbuf // (lq * dv)
        if whole < 1 and lq * dv <= lw.capacity(Buffer.VBUF) // HALF and 2 * lk <= vbuf:
            # Not even one whole-head output fits a VBUF quarter (long sequences: 2048 x 64
            # FP32 is half of the default VBUF): one head's takes half of VBUF, and the
            # query tile shrinks so its scores and a per-query mask block share a quarter.
            whole, tq = 1, min(tq, round_tile(vbuf // (2 * lk), lq, lw.config.mac_rows))
        if whole < 1:
            raise CompileError(f"{op_label(op)}: attention over {lq}x{lk} with row reuse does "
                               f"not fit: one head's {lq}x{dv} output exceeds half of VBUF")
        group = min(group, whole)
    return tq, group
