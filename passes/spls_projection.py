"""Phase 1 of the SPLS prediction chain (passes/lower_spls_to_esact.py): the HLog codes of X,
Q^ = X^ W_Q^ and K^ = X^ W_K^ by shift-adds (BPU), re-quantized to HLog with dynamic
scales per batch element, in two forms with the same results:
- `WholeProjection`: all rows of X and of Q^ / K^ on chip at once (one HLOG per tensor and
  batch element);
- `StreamedProjection` (spls_streamed_projection.py): row tiles, for sequences whose rows do
  not fit (BERT-base at 512 tokens).
Both give phase 2 the K^ codes of a batch element and the Q^ codes of a row chunk
(`k_codes`, `q_codes`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from esact_cc.dialects.lowering import CYCLES_ATTR
from esact_cc.passes.lower_masked_inputs import MaskRows, fail
from esact_cc.passes.lowering_state import F32, OUT_FRACTION, Lowering, node_name, round_tile
from esact_cc.passes.on_chip_activations import rows_on_chip
from esact_cc.passes.spls_scratch import CODE_SLOTS, PredictScratch, weight_code_slots
from esact_cc.runtime.isa import Buffer
from xdsl.dialects.builtin import IntegerAttr, i64

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain
    from esact_cc.passes.spls_streamed_projection import StreamedProjection

PREDICT = "predict"
PROJECTION_GROUPS = 2
"""Groups of whole batch elements the projection is emitted in at batch > 1 (whole-row form,
Q row-masked; `WholeProjection.group`): the attention of one group runs beside the next
group's projection. Digits ViT at batch 16, fine-tuned at 0.8: 116,468 cycles in one group,
113,943 in 2, 114,788 in 4, 114,618 in 8, 115,948 in 16 (docs/design.md section 4.1)."""


def group_elements(batch: int) -> int:
    """Batch elements per projection group at `batch` (`PROJECTION_GROUPS`; 0: one group)."""
    groups = min(PROJECTION_GROUPS, batch)
    return -(-batch // groups) if groups > 1 else 0


X_CODE_TERMS = 0.8
"""Assumed mean shift-add terms of an HLog code of X (0, 1 or 2; zeros are skipped; 0.8 was
measured on BERT-base at 4 bits): only used to estimate BPU cycles when spreading the K / V
GEMMs over the prediction."""


def hlog_input(lw: Lowering, c: Chain) -> None:
    """X^: HLog codes of the whole [B*L, D] input, one dynamic scale per batch element (at
    r["sx"] + b: the elements of a batch stay independent), read from the VBUF tile X is kept
    in (keep-on-chip: the layer norm's output, which the Q / K / V GEMMs read there too; no
    STORE + LOAD through DRAM) or else LOADed. The FP32 PAM of
    all heads (SOFTMAX + SIMILARITY read it at once) is the largest VBUF tile: taken first,
    while nothing is live in the ring, when it fits beside X."""
    r = c.regions
    r["pam"] = None  # type: ignore[assignment]
    if c.float_pam and not c.ring and c.spa_size + c.rows * c.width_in < lw.capacity(Buffer.VBUF) * 3 // 4:
        r["pam"] = lw.alloc(Buffer.VBUF, c.spa_size)
    kept = rows_on_chip(lw, c.x, 0)  # the layer norm's output the Q / K / V GEMMs read too
    vx = lw.alloc(Buffer.VBUF, c.rows * c.width_in) if kept is None else kept
    if kept is None:
        lw.load(Buffer.VBUF, vx, c.x.address, c.rows, c.width_in)
    r["xc"] = lw.alloc(Buffer.ABUF, c.rows * c.width_in)
    r["sx"] = lw.alloc(Buffer.VBUF, c.batch)
    for b in range(c.batch):
        at = b * c.length * c.width_in
        lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=r["xc"] + at, src_addr=vx + at,
                rows=c.length, cols=c.width_in, bits=c.op.bits.value.data, dynamic=1,
                scale_out_addr=r["sx"] + b, scale=1.0)
    if kept is None:
        lw.free(Buffer.VBUF, vx)


@dataclass
class WholeProjection:
    """Phase 1: Q^ | K^ in one shift-add product with the codes of [W_Q | W_K] (one LOAD of
    codes, one of DEQUANT vectors per column tile), dequantized (* s_W per column * s_X +
    bias), then HLog re-quantized per batch element with dynamic scales s_Q, s_K (over ALL
    rows: this is why the projection cannot be chunked by rows, only what follows it)."""

    codes: np.ndarray
    codes_at: int
    vectors_at: int
    passes: list[tuple[int, int]]
    n_tile: int
    acc_buf: PredictScratch
    mask_rows: MaskRows
    code_slots: list[tuple[int, int]]
    group: int = 0
    """Batch elements per projection group (`PROJECTION_GROUPS`; 0: all rows at once, in
    `emit`): group g's BPUs, DEQUANTs and HLOGs are emitted at the first chunk of its first
    element (`q_codes`), so the progressive prediction of group g starts after g's own
    projection and the MAC array runs group g's attention while the BPU projects group g + 1
    (passes/lower_spls_to_esact.py, `place "follow"`). Each column tile's codes keep their
    slot."""
    emitted: set[int] = field(default_factory=set)
    """Groups whose projection is emitted."""

    @staticmethod
    def plan(lw: Lowering, c: Chain, by_groups: bool = False) -> WholeProjection:
        """Constants, tiles and every region of the projection, taken now: the K / V linears
        lowered beside it (`lower_aside`) then avoid all of them. `by_groups` (the layer's Q
        is row-masked by the prediction), at batch > 1, in the whole-row form: the projection
        in `PROJECTION_GROUPS` groups of whole batch elements (`group`), when a code slot per
        column tile fits (with dense-prefix=q, Q beside the projection, the attention already
        waits for its own chunk only: 105,121 cycles in one group, 108,360 in two)."""
        predict, width, rows, r = c.predict, c.width, c.rows, c.regions
        codes, codes_at, vectors_at = projection_constants(lw, c)
        # HLog codes of W in ABUF slots: WBUF banks hold the K / V weight tiles meanwhile.
        # Column tiles small enough for an ACC slot at the top of a bank (PredictScratch).
        acc_bank = getattr(lw.rings[Buffer.ACC], "bank_size", lw.capacity(Buffer.ACC))
        # ... and narrow enough that two slots fit beside X^, Q^ and K^ (ViT-base's 197 rows)
        beside = lw.capacity(Buffer.ABUF) - rows * (c.width_in + c.qk_width)
        n_limit = min(lw.capacity(Buffer.ABUF) // 8 // c.width_in,
                      acc_bank // PredictScratch.SLOT_FRACTION // rows,
                      beside // (CODE_SLOTS * c.width_in))
        if n_limit < 1:
            raise fail(predict, f"the prediction of {rows} rows x {c.width_in} inputs exceeds "
                       "the on-chip buffers")
        # Q^ and K^ columns in one pass when [rows, 2N] FP32 fits a VBUF output tile, else one
        # pass each (the HLog re-quantization needs all N columns of one of them at once).
        together = rows * c.qk_width <= lw.capacity(Buffer.VBUF) // OUT_FRACTION
        passes = [(0, c.qk_width)] if together else [(0, width), (width, c.qk_width)]
        n_tile = round_tile(n_limit, passes[0][1] - passes[0][0], lw.config.mac_cols)
        acc_buf = PredictScratch(lw, Buffer.ACC, rows * n_tile)  # the PAM skips ACC (BPU_SCORES)
        mask_rows = phase2_inputs(lw, c)
        r["qc"], r["kc"] = (lw.alloc(Buffer.ABUF, rows * w) for w in (width, c.k_width))
        r["real"] = lw.alloc(Buffer.VBUF, rows * max(c1 - c0 for c0, c1 in passes))
        tiles = sum(-(-(c1 - c0) // n_tile) for c0, c1 in passes)
        group = group_elements(c.batch) if by_groups and not c.ring else 0
        code_slots = weight_code_slots(lw, c.width_in * n_tile, 2 * n_tile,
                                       tiles if group else CODE_SLOTS)
        group = group if len(code_slots) == tiles else 0
        return WholeProjection(codes, codes_at, vectors_at, passes, n_tile, acc_buf, mask_rows,
                               code_slots, group)

    def emit(self, lw: Lowering, c: Chain) -> None:
        """The projection's instructions (none yet by `group`: `q_codes` emits each
        group's); each BPU carries its estimated cycles (an anchor of
        `prediction_overlap.interleave`)."""
        if not self.group:
            self._emit_rows(lw, c, 0, c.batch)

    def _emit_rows(self, lw: Lowering, c: Chain, element: int, count: int) -> None:
        """Q^ | K^ codes of the rows of batch elements [element, element + count)."""
        r = c.regions
        rows, first = count * c.length, element * c.length
        slot = 0
        for c0, c1 in self.passes:
            cols = c1 - c0
            for n0 in range(c0, c1, self.n_tile):
                nt = min(self.n_tile, c1 - n0)
                emit_column_tile(lw, c, self, slot, n0, nt, rows,
                                 r["real"] + first * cols + n0 - c0, cols, element,
                                 x_at=r["xc"] + first * c.width_in,
                                 load_codes=not self.emitted)
                slot += 1
            for b in range(element, element + count):
                for which, (out, at, width) in enumerate(((r["qc"], 0, c.width),
                                                          (r["kc"], c.width, c.k_width))):
                    if c0 <= at < c1:
                        lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF,
                                dst_addr=out + b * c.length * width,
                                src_addr=r["real"] + b * c.length * cols + at - c0,
                                rows=c.length, cols=width, src_stride=cols,
                                bits=c.predict.bits.value.data, dynamic=1,
                                scale_out_addr=r["sqk"] + 2 * b + which, scale=1.0)

    def release(self, lw: Lowering, c: Chain) -> None:
        """Free the projection's tiles (X codes, weight-code slots, FP32 staging), but by
        `group`: the chunks emit the projection, `finish` frees them."""
        if not self.group:
            self._release_tiles(lw, c)

    def _release_tiles(self, lw: Lowering, c: Chain) -> None:
        r = c.regions
        lw.free(Buffer.ABUF, r["xc"], *(w for w, _ in self.code_slots))
        lw.free(Buffer.VBUF, r["sx"], r["real"], *(v for _, v in self.code_slots))

    def finish(self, lw: Lowering, c: Chain) -> None:
        if self.group:
            self._release_tiles(lw, c)
        lw.free(Buffer.ABUF, c.regions["qc"], c.regions["kc"])

    def k_codes(self, lw: Lowering, c: Chain, b: int, r0: int) -> int:
        """ABUF address of batch element b's K^ codes [L, Nk] at its chunk from row r0 (all on
        chip already, or by `group` emitted now)."""
        self._element(lw, c, b)
        return c.regions["kc"] + b * c.length * c.k_width

    def q_codes(self, lw: Lowering, c: Chain, b: int, r0: int, n: int) -> int:
        """ABUF address of Q^ codes of rows [r0, r0 + n) of batch element b (row stride N);
        by `group`: b's group's projection is emitted at its first chunk."""
        self._element(lw, c, b)
        return c.regions["qc"] + (b * c.length + r0) * c.width

    def _element(self, lw: Lowering, c: Chain, b: int) -> None:
        g = b // self.group if self.group else -1
        if self.group and g not in self.emitted:
            first = g * self.group
            self._emit_rows(lw, c, first, min(self.group, c.batch - first))
            self.emitted.add(g)



def vector(lw: Lowering, hint: str, array: np.ndarray, cache_key: tuple | None = None) -> int:
    """A constant FP32 vector LOADed into VBUF."""
    t = lw.constant(hint, np.ascontiguousarray(array, np.float32), cache_key)
    addr = lw.alloc(Buffer.VBUF, array.size)
    lw.load(Buffer.VBUF, addr, t.address, 1, array.size)
    return addr


def projection_constants(lw: Lowering, c: Chain) -> tuple[np.ndarray, int, int]:
    """The HLog codes of [W_Q | W_K] ([D, N + Nk]: grouped-query K^ has its K heads' columns
    only) and their DEQUANT vectors (s_W per column, bias) in the DRAM image: (codes, codes
    address, vectors address)."""
    predict, widths = c.predict, (c.width, c.k_width)
    codes = np.concatenate([lw.weight_array(predict.wq, "wq"),
                            lw.weight_array(predict.wk, "wk")], axis=1).astype(np.int8)
    w_scales = [float(np.float32(lw.weight_array(v, "HLog weight scale")))
                for v in (predict.wq_scale, predict.wk_scale)]
    vectors = np.stack([np.repeat(np.array(w_scales, np.float32), widths),
                        np.concatenate([lw.weight_array(v, "bias").astype(np.float32)
                                        .reshape(w) for v, w in zip((predict.bq, predict.bk),
                                                                    widths)])])
    hint = node_name(predict) or "spls.predict"
    c8 = lw.constant(f"{hint}.qk_hlog_codes", codes)
    cv = lw.constant(f"{hint}.qk_hlog_dequant", vectors.astype(np.float32))
    return codes, c8.address, cv.address


def phase2_inputs(lw: Lowering, c: Chain) -> MaskRows:
    """(s_Q, s_K) slots per batch element (adjacent: the PAM DEQUANT reads both), the PAM
    scale vector and the mask rows, LOADed now: in the in-order load queue they would
    otherwise wait behind the K / V loads, which wait for the compute queue."""
    r, predict = c.regions, c.predict
    r["sqk"] = lw.alloc(Buffer.VBUF, 2 * c.batch)
    scale = float(predict.scale.value.data)
    r["pam_scale"] = vector(lw, "spls.pam_scale", np.full(c.length, scale, np.float32),
                            ("spls-pam-scale", c.length, scale))
    mask_rows = MaskRows(lw, predict, predict.mask, c.batch, c.heads, c.length, c.length)
    streamed = c.ring and mask_rows.per_query  # LOADed per chunk (`_emit_chunk`)
    for b in range(0 if streamed else c.batch):
        for h in range(c.heads):
            mask_rows.prefetch(b, h)
    return mask_rows


def emit_column_tile(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection,
                     slot: int, n0: int, nt: int, rows: int, dst: int, dst_stride: int,
                     batch: int = 0, x_at: int | None = None, load_codes: bool = True) -> None:
    """Columns [n0, n0 + nt) of [Q^ | K^] for `rows` rows of X^ (at r["xc"]): LOAD of the
    HLog weight codes and DEQUANT vectors into code slot `slot`, BPU (carrying its estimated
    cycles: an anchor of `prediction_overlap.interleave`), DEQUANT (* s_W * s_X + bias) to the
    FP32 rows at `dst`, one per batch element (its own s_X) when `rows` are several whole
    elements from `batch`, else the rows are of batch element `batch`. Shared by the whole
    and the row-tiled projection. `x_at`: X^'s first row (default r["xc"]); `load_codes`
    False: the slot holds this column tile's codes already (the projection by groups)."""
    r, both = c.regions, c.qk_width
    wt, sb = projection.code_slots[slot % len(projection.code_slots)]
    if load_codes:
        lw.load(Buffer.ABUF, wt, projection.codes_at + n0, c.width_in, nt, dram_stride=both)
        lw.hoist_last()
        lw.load(Buffer.VBUF, sb, projection.vectors_at + n0 * F32, 2, nt, dram_stride=both * F32)
        lw.hoist_last()
    acc = projection.acc_buf.alloc(rows * nt)
    bpu = lw.emit("bpu", PREDICT, dst_addr=acc, a_buf=Buffer.ABUF,
                  a_addr=r["xc"] if x_at is None else x_at,
                  b_buf=Buffer.ABUF, b_addr=wt, m=rows, k=c.width_in, n=nt)
    codes = projection.codes[:, n0:n0 + nt].astype(np.int64)
    terms = int(np.bitwise_count(np.abs(codes)).sum())
    bpu.attributes[CYCLES_ATTR] = IntegerAttr(
        math.ceil(rows * terms * X_CODE_TERMS / lw.config.bpu_lanes), i64)
    count = rows // c.length if rows % c.length == 0 and rows > c.length else 1
    elements = [(batch + i, i * c.length) for i in range(count)]
    rows_each = rows // len(elements)
    for b, r0 in elements:
        lw.emit("dequant", PREDICT, dst_addr=dst + r0 * dst_stride, src_addr=acc + r0 * nt,
                rows=rows_each, cols=nt, dst_stride=dst_stride, scale_addr=sb, has_bias=1,
                bias_addr=sb + nt, scalar_count=1, scalar_addr=r["sx"] + b)
    projection.acc_buf.free(acc)
