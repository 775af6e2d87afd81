"""Sparse lowering rules of `lower-to-esact`: the `spls` dialect -> SPLS and masked instructions.

Registered into `lower_to_esact._LOWERINGS` (the hook at the end of that file imports this
module); the dense machinery (`_Lowering`: allocators, DRAM plan, QUANT/LOAD helpers, fused
GELU / residual epilogues, `write_tile`) is reused as is.

The prediction chain that `insert-spls` emits per layer,
    hlog_quantize(X) -> predict_attention -> topk -> local_similarity,
is lowered as ONE unit at the `spls.hlog_quantize` op (the other three are marked fused), with
every intermediate on chip (DESIGN.md section 6), in two phases:
1. Projection, over all rows: LOAD X -> HLOG (dynamic per-tensor scale) -> per column tile of
   [W_Q | W_K]: LOAD HLog(W) codes, BPU (X^ W^, shift-adds), DEQUANT (* s_W per column * s_X,
   + bias) -> HLOG of Q^ and of K^ per batch element (dynamic scales s_Q, s_K). The HLog
   scales span all rows, so this phase cannot be split by rows.
2. Progressive prediction, per row chunk (lower-to-esact's `spls-chunk-rows`, default the
   MAC array's rows): per head BPU (Q^_h rows of the chunk x K^_h^T) -> ACC, [DEQUANT (* scale * s_Q * s_K) -> PAM rows
   in VBUF, + mask], TOPK of the chunk's rows -> SPA rows in MBUF; [SOFTMAX of the chunk's PAM
   rows for cosprob]; SIMILARITY with first_row / row_count = the chunk: it decides the
   chunk's rows from the reuse-map entries of the earlier rows (still in MBUF) and their SPA /
   prob rows, which is exactly the whole-row decision (the window only looks back), and
   writes the chunk's part of the reuse map and computed-row mask (and ORs its keys into the
   key mask).
The masks stay in MBUF (the dense lowering does not use MBUF) until the layer's last masked op
is lowered. HLOG/BPU/TOPK/SIMILARITY run on the predict queue (its SFU DEQUANT/SOFTMAX on the
SFU queue; all of component `predict`); `schedule` derives the tokens from the memory
operands, so what overlaps what follows from where the consumers' tiles and instructions are:
- K / V (`attention=dense`: dense linears of X, independent of the prediction) are lowered
  beside phase 1 (`_lower_aside`: while every prediction region is allocated, so their tiles
  share none) and spread over its BPU tiles by estimated time (`_interleave`): the compute
  queue runs them while the BPU works, and their loads do not wait behind the prediction's.
- The masked Q linear of X is lowered beside phase 2 with one GEMM per chunk (its row tile of
  the chunk's rows), placed after the chain: GEMM c waits only for SIMILARITY c, so the MAC
  array computes chunk c's Q rows while the BPU predicts chunk c + 1.
- The attention, O and FFN need all rows (K / V of every key, then the attention output) and
  follow as before.

Masked ops:
- `spls.masked_quantized_linear` (Q, O, FFN1, FFN2): per batch element one row tile of all L
  rows (Q: one GEMM per prediction chunk into that tile); GEMM with the computed-row mask (reused rows are neither computed nor written), DEQUANT,
  SCATTER_ROWS with the reuse map (a reused row takes its representative's output row), then the
  fused GELU / residual add, so a reused row's own residual stream gets the representative's
  sublayer output (DESIGN.md section 6 step 5).
- `spls.key_masked_quantized_linear` (K, V with `attention=topk`): one GEMM per head column
  block with that head's key mask as row mask. Rows a head does not select are NOT zeroed (the
  reference interpreter zeroes them): no computed attention row ever reads them (the key mask
  is the union of the computed rows' SPA), so the layer's outputs are identical.
- `spls.masked_quantized_attention` / `spls.sparse_quantized_attention`: the dense attention
  schedule with ATTN_QK / ATTN_PV row masks (reused query rows skipped), for `topk` also the
  SPA element mask in ATTN_QK, SOFTMAX and ATTN_PV, then SCATTER_ROWS per head.

Additive attention masks (padding): one row per batch element and head is loaded into VBUF
and given to TOPK (`add_mask`: masked keys are never selected, FP32 PAM + mask is ranked, as
in the reference) and to the SOFTMAX of PAM and of the attention. A per-query mask [.., L, L]
(e.g. BERT's expanded padding mask) is ADDed to the FP32 PAM and to the attention scores; TOPK
then ranks masked keys last instead of excluding them, which differs from the reference only
in rows with fewer than k unmasked keys (never without padding).

Limits (CompileError): HLog bits <= 7 (codes in int8 buffers), the L rows of one batch element
must fit one ABUF tile, the H x L x L SPA of one batch element must fit MBUF (SIMILARITY reads
all heads and every earlier row), a dynamic HLog scale only (what insert-spls emits); the
projection's regions (X^, Q^, K^ codes, two code slots) and the K / V / Q tiles lowered beside
them must fit the buffers together.
"""

from __future__ import annotations

import copy
import math

import numpy as np
from esact_cc.dialects import esact, spls, transformer
from esact_cc.passes.lower_gemm import MaskRows, fail, plan_masked_inputs
from esact_cc.passes.lowering_state import (
    F32,
    OUT_FRACTION,
    Lowering,
    MaskTiles,
    Rule,
    is_dense_int8_linear,
    node_name,
    round_tile,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import MAX_INT8_HLOG_BITS, Buffer, SimilarityMode, operand_extent
from xdsl.ir import Operation, SSAValue

PREDICT = "predict"
X_CODE_TERMS = 0.8
"""Assumed mean shift-add terms of an HLog code of X (0, 1 or 2; zeros are skipped; 0.8 was
measured on BERT-base at 4 bits): only used to estimate BPU cycles when spreading the K / V
GEMMs over the prediction."""
CODE_SLOTS = 2
"""ABUF / VBUF slots for the HLog weight-code tiles and their DEQUANT vectors (double
buffered: the load of tile j + 2 waits for the BPU of tile j)."""
SIMILARITY_MODES = {"overlap": SimilarityMode.OVERLAP, "cosprob": SimilarityMode.COSPROB}


def _is_row_masked_linear(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.is_quantized and op.rows is not None


# ----------------------------------------------------------------------------- prediction


def _single_user(value: SSAValue, kind: type[Operation], what: Operation) -> Operation:
    users = [u.operation for u in value.uses]
    if len(users) != 1 or not isinstance(users[0], kind):
        raise fail(what, f"expected exactly one {kind.name} user (the insert-spls chain)")  # type: ignore[attr-defined]
    return users[0]


def lower_prediction(lw: Lowering, op: spls.HLogQuantizeOp) -> None:
    """The whole prediction chain of one layer (see the module docstring)."""
    plan_masked_inputs(lw, op)
    predict = _single_user(op.codes, spls.PredictAttentionOp, op)
    assert isinstance(predict, spls.PredictAttentionOp)
    if [u.operation for u in op.code_scale.uses] != [predict]:
        raise fail(op, "the HLog scale must feed the prediction only")
    pam_users = [u.operation for u in predict.result.uses]
    topks = [u for u in pam_users if isinstance(u, spls.TopKOp)]
    if len(topks) != 1 or any(not isinstance(u, (spls.TopKOp, spls.LocalSimilarityOp))
                              for u in pam_users):
        raise fail(predict, "PAM must feed one spls.topk (and the similarity's probs)")
    topk = topks[0]
    sims = [u.operation for u in topk.result.uses if isinstance(u.operation, spls.LocalSimilarityOp)]
    if len(sims) != 1:
        raise fail(topk, "SPA must feed exactly one spls.local_similarity")
    sim = sims[0]
    assert isinstance(sim, spls.LocalSimilarityOp)
    if sim.pam is not None and sim.pam is not predict.result:
        raise fail(sim, "the similarity's probs must be the layer's PAM")
    spa_users = [u.operation for u in topk.result.uses if u.operation is not sim]
    if any(not (isinstance(u, transformer.AttentionOp) and u.spa is not None) for u in spa_users):
        raise fail(topk, "SPA may feed only the similarity and sparse attentions")
    if op.scale is not None:
        raise fail(op, "a static HLog scale is not supported (insert-spls emits dynamic ones)")
    bits = op.bits.value.data
    if bits > MAX_INT8_HLOG_BITS or predict.bits.value.data > MAX_INT8_HLOG_BITS:
        raise fail(op, f"hlog-bits > {MAX_INT8_HLOG_BITS} is not supported (int8 code buffers)")
    lw.fused.update((predict, topk, sim))

    x = lw.f32_tensor(op.x, "x")
    batch, length, width_in = x.shape
    heads = predict.num_heads.value.data
    wq_codes = lw.weight_array(predict.wq, "wq")
    width = wq_codes.shape[1]
    d = width // heads
    causal = predict.causal is not None
    k = topk.k.value.data
    mode = sim.mode.data
    rows = batch * length
    chunk = chunk_rows(lw, length)
    chunks = [(r0, min(chunk, length - r0)) for r0 in range(0, length, chunk)]

    def vec_constant(hint: str, array: np.ndarray, cache_key: tuple | None = None) -> int:
        t = lw.constant(hint, np.ascontiguousarray(array, np.float32), cache_key)
        addr = lw.alloc(Buffer.VBUF, array.size)
        lw.load(Buffer.VBUF, addr, t.address, *(array.shape if array.ndim == 2 else (1, array.size)))
        return addr

    # X^: HLog codes of the whole [B*L, D] input with one per-tensor scale.
    # The FP32 PAM of all heads (SOFTMAX + SIMILARITY read it at once) is the largest VBUF
    # tile: taken first, while nothing is live in the ring, when it fits beside X.
    spa_size = heads * length * length
    float_pam = sim.pam is not None or predict.mask is not None
    pam = None
    if float_pam and spa_size + rows * width_in < lw.capacity(Buffer.VBUF) * 3 // 4:
        pam = lw.alloc(Buffer.VBUF, spa_size)
    vx = lw.alloc(Buffer.VBUF, rows * width_in)
    lw.load(Buffer.VBUF, vx, x.address, rows, width_in)
    xc = lw.alloc(Buffer.ABUF, rows * width_in)
    sx = lw.alloc(Buffer.VBUF, 1)
    lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=xc, src_addr=vx, rows=rows,
            cols=width_in, bits=bits, dynamic=1, scale_out_addr=sx, scale=1.0)
    lw.free(Buffer.VBUF, vx)

    # Q^ | K^ in one shift-add product with the codes of [W_Q | W_K] (one LOAD of codes, one of
    # DEQUANT vectors per column tile), dequantized (* s_W per column * s_X + bias), then HLog
    # re-quantized per batch element with dynamic scales s_Q, s_K (over ALL rows: this is why
    # the projection cannot be chunked by rows, only what follows it).
    both = 2 * width
    codes = np.concatenate([lw.weight_array(predict.wq, "wq"), lw.weight_array(predict.wk, "wk")],
                           axis=1).astype(np.int8)
    w_scales = [float(np.float32(lw.weight_array(v, "HLog weight scale")))
                for v in (predict.wq_scale, predict.wk_scale)]
    vectors = np.stack([np.repeat(np.array(w_scales, np.float32), width),
                        np.concatenate([lw.weight_array(v, "bias").astype(np.float32).reshape(width)
                                        for v in (predict.bq, predict.bk)])])
    hint = node_name(predict) or "spls.predict"
    c8 = lw.constant(f"{hint}.qk_hlog_codes", codes)
    cv = lw.constant(f"{hint}.qk_hlog_dequant", vectors.astype(np.float32))
    # HLog codes of W in ABUF slots: WBUF banks hold the K / V weight tiles meanwhile.
    # Column tiles small enough for an ACC slot at the top of a bank (PredictScratch).
    acc_bank = getattr(lw.rings[Buffer.ACC], "bank_size", lw.capacity(Buffer.ACC))
    n_limit = min(lw.capacity(Buffer.ABUF) // 8 // width_in,
                  acc_bank // PredictScratch.SLOT_FRACTION // rows)
    if n_limit < 1:
        raise fail(predict, f"the prediction of {rows} rows x {width_in} inputs exceeds the "
                    "on-chip buffers")
    # Q^ and K^ columns in one pass when [rows, 2N] FP32 fits a VBUF output tile, else one
    # pass each (the HLog re-quantization needs all N columns of one of them at once).
    together = rows * both <= lw.capacity(Buffer.VBUF) // OUT_FRACTION
    passes = [(0, both)] if together else [(0, width), (width, both)]
    n_tile = round_tile(n_limit, passes[0][1] - passes[0][0], lw.config.mac_cols)
    acc_buf = PredictScratch(lw, Buffer.ACC, max(rows * n_tile, chunk * length))
    # Every region of the projection is taken now, before the K / V linears are lowered
    # beside it (`_lower_aside`), so their tiles avoid all of them.
    sqk = lw.alloc(Buffer.VBUF, 2 * batch)  # (s_Q, s_K) per batch element, adjacent
    # Phase 2's loads (PAM scale, mask rows) are issued now: in the in-order load queue they
    # would otherwise wait behind the K / V loads, which wait for the compute queue.
    pam_scale = vec_constant("spls.pam_scale", np.full(length, predict.scale.value.data, np.float32),
                             ("spls-pam-scale", length, float(predict.scale.value.data)))
    mask_rows = MaskRows(lw, predict, predict.mask, batch, heads, length, length)
    for b in range(batch):
        for h in range(heads):
            mask_rows.prefetch(b, h)
    qc, kc = (lw.alloc(Buffer.ABUF, rows * width) for _ in range(2))
    real = lw.alloc(Buffer.VBUF, rows * max(c1 - c0 for c0, c1 in passes))
    code_slots = _code_slots(lw, width_in * n_tile, 2 * n_tile)
    kv = _independent_projections(sim, op.x)
    independent = _lower_aside(lw, kv, masks=None)
    emitted = {id(ins) for ins in lw.instrs}
    bpus: list[tuple[Operation, int]] = []  # (BPU, estimated cycles)
    for c0, c1 in passes:
        cols = c1 - c0
        for n0 in range(c0, c1, n_tile):
            nt = min(n_tile, c1 - n0)
            wt, sb = code_slots[len(bpus) % len(code_slots)]
            lw.load(Buffer.ABUF, wt, c8.address + n0, width_in, nt, dram_stride=both)
            lw.hoist_last(Buffer.ABUF, wt, wt + width_in * nt)
            lw.load(Buffer.VBUF, sb, cv.address + n0 * F32, 2, nt, dram_stride=both * F32)
            lw.hoist_last(Buffer.VBUF, sb, sb + 2 * nt)
            acc = acc_buf.alloc(rows * nt)
            lw.emit("bpu", PREDICT, dst_addr=acc, a_buf=Buffer.ABUF, a_addr=xc,
                    b_buf=Buffer.ABUF, b_addr=wt, m=rows, k=width_in, n=nt)
            terms = int(np.bitwise_count(np.abs(codes[:, n0:n0 + nt].astype(np.int64))).sum())
            bpus.append((lw.instrs[-1], math.ceil(rows * terms * X_CODE_TERMS / lw.config.bpu_lanes)))
            lw.emit("dequant", PREDICT, dst_addr=real + n0 - c0, src_addr=acc, rows=rows,
                    cols=nt, dst_stride=cols, scale_addr=sb, has_bias=1, bias_addr=sb + nt,
                    scalar_count=1, scalar_addr=sx)
            acc_buf.free(acc)
        for b in range(batch):
            for which, out in enumerate((qc, kc)):
                if not c0 <= which * width < c1:
                    continue
                lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=out + b * length * width,
                        src_addr=real + b * length * cols + which * width - c0, rows=length,
                        cols=width, src_stride=cols, bits=predict.bits.value.data, dynamic=1,
                        scale_out_addr=sqk + 2 * b + which, scale=1.0)
    late = [] if independent is None else _interleave(lw, emitted, independent, bpus)
    lw.free(Buffer.ABUF, xc, *(w for w, _ in code_slots))
    lw.free(Buffer.VBUF, sx, real, *(v for _, v in code_slots))

    # PAM, TOPK, [SOFTMAX], SIMILARITY per row chunk (progressive prediction): the reuse map
    # of chunk c only needs the PAM rows of chunk c and the window of earlier computed rows,
    # whose SPA / prob rows and map entries stay on chip, so chunk c's consumers (the masked
    # Q GEMM's rows of chunk c) run on the compute queue while the BPU predicts chunk c + 1.
    # TOPK from the exact integer PAM, the FP32 PAM (VBUF) for the similarity's probs.
    keep_spa = bool(spa_users)
    masks = MaskTiles(batch, length, heads,
                       reuse_map=lw.alloc(Buffer.MBUF, 2 * length * batch),
                       row_mask=lw.alloc(Buffer.MBUF, length * batch),
                       key_mask=lw.alloc(Buffer.MBUF, heads * length * batch),
                       spa=None, chunks=chunks, x=op.x)
    spa = lw.alloc(Buffer.MBUF, spa_size * batch)
    if float_pam and pam is None:
        pam = lw.alloc(Buffer.VBUF, spa_size)
    masks.users = {u.operation for v in (sim.reuse_map, sim.key_mask, topk.result)
                   for u in v.uses if u.operation is not sim}
    for value in (sim.reuse_map, sim.key_mask, topk.result):
        lw.masks[value] = masks
    if keep_spa:
        masks.spa = spa
    chain_start = len(lw.instrs)  # the chain has no loads: nothing is hoisted into it

    # With an additive mask TOPK ranks the FP32 PAM plus the mask (as the reference does);
    # without one the exact integer PAM (same order: PAM scales are positive).
    def softmax(b: int, h: int, at: int, rows_s: int, r0: int) -> None:
        """softmax(PAM) rows in place (cosprob's probs), after the head's TOPK read them."""
        extra = ({"has_add_mask": 1, "add_mask_addr": mask_rows.row(b, h)}
                 if mask_rows.present and not mask_rows.per_query else {})
        lw.emit("softmax", PREDICT, dst_addr=at, src_addr=at, rows=rows_s, cols=length,
                scale=1.0, causal=int(causal), causal_offset=r0 if causal else 0, **extra)

    for b in range(batch):
        for r0, n in chunks:
            per_head = causal or mask_rows.per_head or n < length
            for h in range(heads):
                block = h * length * length + r0 * length  # the chunk's rows of head h
                scores = acc_buf.alloc(n * length)
                lw.emit("bpu", PREDICT, dst_addr=scores, a_buf=Buffer.ABUF,
                        a_addr=qc + (b * length + r0) * width + h * d, b_buf=Buffer.ABUF,
                        b_addr=kc + b * length * width + h * d, m=n, k=d, n=length,
                        a_stride=width, b_stride=width, transpose_b=1)
                source = {"src_buf": Buffer.ACC, "src_addr": scores}
                if pam is not None:
                    lw.emit("dequant", PREDICT, dst_addr=pam + block, src_addr=scores,
                            rows=n, cols=length, scale_addr=pam_scale, scalar_count=2,
                            scalar_addr=sqk + 2 * b)
                    if mask_rows.per_query:  # PAM + mask, ranked as is (see _MaskRows.add_block)
                        mask_rows.add_block(b, h, pam + block, r0, n, PREDICT)
                        source = {"src_buf": Buffer.VBUF, "src_addr": pam + block}
                    elif mask_rows.present:
                        source = {"src_buf": Buffer.VBUF, "src_addr": pam + block,
                                  "has_add_mask": 1, "add_mask_addr": mask_rows.row(b, h)}
                lw.emit("topk", PREDICT, dst_addr=spa + b * spa_size + block, rows=n,
                        cols=length, k=k, causal=int(causal), causal_offset=r0 if causal else 0,
                        **source)
                acc_buf.free(scores)
                if sim.pam is not None and per_head:  # each head's rows as soon as ranked
                    softmax(b, h, pam + block, n, r0)
            if sim.pam is not None and not per_head:  # one SOFTMAX over all heads' rows
                softmax(b, 0, pam, heads * length, 0)
            lw.emit("similarity", PREDICT, map_addr=masks.reuse_map + 2 * length * b,
                    key_mask_addr=masks.key_mask + heads * length * b, spa_addr=spa + b * spa_size,
                    has_prob=int(pam is not None), prob_addr=pam or 0, heads=heads, length=length,
                    keys=length, window=sim.window.value.data, k=sim.k.value.data,
                    threshold=float(sim.threshold.value.data), mode=SIMILARITY_MODES[mode],
                    has_row_mask=1, row_mask_addr=masks.row_mask + length * b,
                    first_reference=(0 if sim.first_reference is None
                                     else sim.first_reference.value.data),
                    first_row=r0, row_count=n)
    chain_first = lw.instrs[chain_start]
    _sink(lw, late)  # K / V pieces expected after the projection: after the chain
    # The masked Q linear, lowered while the chain's regions are still allocated (its tiles
    # avoid them, so no false dependency holds its loads behind the last chunk), after it;
    # its input tile's preparation then moves in front of the chain.
    generation = _lower_aside(lw, _chunk_consumers(sim, op.x), masks)
    if generation:
        lw.instrs.extend(generation)
        _hoist_preparation(lw, generation, chain_first)
    if pam is not None:
        lw.free(Buffer.VBUF, pam)
    mask_rows.free()
    lw.free(Buffer.VBUF, pam_scale, sqk)
    lw.free(Buffer.ABUF, qc, kc)
    if not keep_spa:
        lw.free(Buffer.MBUF, spa)
    if independent is None:  # no room beside the projection: after the chain, as one unit
        for early in kv:
            _lower_now(lw, early)


def _code_slots(lw: Lowering, codes: int, vectors: int) -> list[tuple[int, int]]:
    """`CODE_SLOTS` (ABUF codes, VBUF DEQUANT vectors) tile slots, fewer (at least one) when
    the buffers hold fewer beside the prediction's other regions."""
    slots: list[tuple[int, int]] = []
    for _ in range(CODE_SLOTS):
        try:
            a = lw.alloc(Buffer.ABUF, codes)
        except CompileError:
            if slots:
                break
            raise
        try:
            slots.append((a, lw.alloc(Buffer.VBUF, vectors)))
        except CompileError:
            lw.free(Buffer.ABUF, a)
            if slots:
                break
            raise
    return slots


def chunk_rows(lw: Lowering, length: int) -> int:
    """Rows per prediction chunk: the `spls-chunk-rows` option of lower-to-esact, or the MAC
    array's rows when it is not given; 0 = one chunk of all rows."""
    rows = lw.config.mac_rows if lw.spls_chunk_rows is None else lw.spls_chunk_rows
    return length if rows <= 0 else min(rows, length)


def _independent_projections(sim: spls.LocalSimilarityOp, x: SSAValue) -> list[Operation]:
    """The layer's dense K / V linears of X (`attention=dense`): they do not depend on the
    prediction, so the compute queue runs them while the BPU computes Q^ and K^
    (`_interleave`)."""
    early: list[Operation] = []
    for use in sim.reuse_map.uses:
        att = use.operation
        if isinstance(att, transformer.AttentionOp) and att.spa is None:
            for value in (att.k, att.v):
                owner = value.owner
                if is_dense_int8_linear(owner) and owner.x is x and owner not in early:
                    early.append(owner)
    return early


def _chunk_consumers(sim: spls.LocalSimilarityOp, x: SSAValue) -> list[Operation]:
    """The row-masked linears of X (the Q projection): one GEMM per prediction chunk."""
    found: list[Operation] = []
    for use in sim.reuse_map.uses:
        user = use.operation
        if _is_row_masked_linear(user) and user.x is x and user not in found:
            found.append(user)
    return found


def _lower_now(lw: Lowering, op: Operation) -> None:
    """Lower `op` at this point of the program (it is then skipped where it stands)."""
    lw.lower_op(op)
    lw.fused.add(op)


def _lower_aside(lw: Lowering, ops: list[Operation],
                 masks: MaskTiles | None) -> list[Operation] | None:
    """Lower `ops` now and take their instructions out of the program, to be placed later in
    the prediction's stretch of it. Their tiles are allocated while every region of the
    prediction is live, so they never share one (the only exception, PredictScratch's ACC
    slots, is checked by `_interleave`); a weight load hoisted above this point
    (`hoist_last`) stays there. None, with the lowering state as before (but for unused DRAM
    constants), when their tiles do not fit beside the prediction's (`masks`: the layer's
    masks, whose users the lowering updates)."""
    saved = (copy.deepcopy(lw.rings), list(lw.instrs), set(lw.fused),
             None if masks is None else set(masks.users))
    before = {id(i) for i in lw.instrs}
    try:
        for op in ops:
            _lower_now(lw, op)
    except CompileError:
        lw.rings.clear()
        lw.rings.update(saved[0])
        lw.instrs[:] = saved[1]
        lw.fused.clear()
        lw.fused.update(saved[2])
        if masks is not None and saved[3] is not None:
            masks.users = saved[3]
        return None
    last_old = max((i for i, ins in enumerate(lw.instrs) if id(ins) in before), default=-1)
    body = lw.instrs[last_old + 1:]
    del lw.instrs[last_old + 1:]
    return body


def _interleave(lw: Lowering, emitted: set[int], body: list[Operation],
                anchors: list[tuple[Operation, int]]) -> list[Operation]:
    """Spread `body` (the K / V linears) over the prediction instructions emitted since
    `emitted` (ids of the instructions before them; some loads were hoisted among those).

    The body is cut after each GEMM. With estimated cycles for the BPU anchors (BPU, cycles)
    and the GEMMs, GEMM g and the loads before it go just before the anchor running when
    GEMM g - 1 is expected to end, and GEMM g - 1's epilogue (DEQUANT, STORE) one anchor
    later: the in-order load queue then issues each GEMM's loads about when the compute
    queue can use them (not behind every prediction load, nor so early that a load waiting
    for a weight bank holds the BPU's code loads), and an epilogue waiting for its GEMM does
    not hold the in-order SFU queue in front of the prediction's DEQUANTs. Everything stays
    after the prediction when a body instruction and a prediction instruction touch a common
    region (one writing); an epilogue stays in front of the next loads when they share one.
    Returns the pieces placed after the last anchor (for `_sink`)."""
    if not body:
        return []
    segment = [ins for ins in lw.instrs if id(ins) not in emitted]
    if _conflicting(body, segment):
        lw.instrs.extend(body)
        return []
    pieces: list[list[Operation]] = [[]]
    for ins in body:
        pieces[-1].append(ins)
        if ins.name == "esact.gemm":
            pieces.append([])
    starts, t = [], 0
    for _, cycles in anchors:
        starts.append(t)
        t += cycles

    def anchor_at(time: int) -> int | None:
        """The first anchor still running at `time` (None: after the last one)."""
        return next((i for i, s0 in enumerate(starts) if s0 + anchors[i][1] > time), None)

    placed: list[tuple[int | None, list[Operation]]] = []
    ready = 0  # estimated end of the previous GEMM
    for piece in pieces:
        loads = [ins for ins in piece if ins.name == "esact.load"]
        rest = [ins for ins in piece if ins.name != "esact.load"]
        epilogue = [ins for ins in rest if ins.name != "esact.gemm"]
        gemm = [ins for ins in rest if ins.name == "esact.gemm"]
        at = anchor_at(ready)
        if epilogue and gemm and not _conflicting(epilogue, loads):
            later = anchor_at(ready) if at is None else (at + 1 if at + 1 < len(anchors) else None)
            placed.append((later, epilogue))
            placed.append((at, loads + gemm))
        else:
            placed.append((at, piece))
        if gemm:
            instr = gemm[0].to_instruction()  # type: ignore[attr-defined]
            start = starts[at] if at is not None else t
            ready = max(ready, start) + (-(-instr["m"] // lw.config.mac_rows)
                                         * -(-instr["n"] // lw.config.mac_cols) * instr["k"])
    before: dict[int, list[Operation]] = {}
    after: list[Operation] = []
    for at, group in placed:
        (after if at is None else before.setdefault(id(anchors[at][0]), [])).extend(group)
    merged: list[Operation] = []
    last = segment[-1]
    for ins in lw.instrs:
        merged.extend(before.pop(id(ins), ()))
        merged.append(ins)
        if ins is last:
            merged.extend(after)
    assert not before
    lw.instrs[:] = merged
    return after


def _hoist_preparation(lw: Lowering, body: list[Operation], target: Operation) -> None:
    """Move the instructions of `body` (in the program) before its first GEMM, the input
    tile's LOAD / QUANT that do not depend on the prediction, to just before `target` (the
    chain's first instruction), each one that shares no region (one writing) with what it
    passes: the in-order load and SFU queues then prepare Q's input while the BPU works,
    not after the chain's last SOFTMAX and the K / V loads. Weight loads stay (they wait
    for a WBUF bank, and `hoist_last` placed them already)."""
    prefix = []
    for ins in body:
        if ins.name == "esact.gemm":
            break
        prefix.append(ins)
    start = next(k for k, ins in enumerate(lw.instrs) if ins is target)
    first = next(k for k, ins in enumerate(lw.instrs) if ins is prefix[0]) if prefix else None
    if first is None:
        return
    passed = lw.instrs[start:first]
    moved: list[Operation] = []
    stay: list[Operation] = []
    for ins in prefix:
        wbuf = any(r[0] == "WBUF" and r[3] for r in _regions(ins))
        if not wbuf and not _conflicting([ins], passed + stay):
            moved.append(ins)
        else:
            stay.append(ins)
    if not moved:
        return
    ids = {id(ins) for ins in moved}
    rest = [ins for ins in lw.instrs[start:] if id(ins) not in ids]
    lw.instrs[start:] = moved + rest


def _sink(lw: Lowering, late: list[Operation]) -> None:
    """Move `late` (in their order) to the end of the program when they share no region with
    an instruction they pass (one writing): the K / V pieces expected after the projection,
    whose epilogues would otherwise hold the in-order SFU queue (and their loads the load
    queue) in front of the progressive prediction while they wait for their GEMMs."""
    if not late:
        return
    ids = {id(ins) for ins in late}
    first = next(k for k, ins in enumerate(lw.instrs) if id(ins) in ids)
    passed = [ins for ins in lw.instrs[first:] if id(ins) not in ids]
    if not _conflicting(late, passed):
        lw.instrs[first:] = passed + [ins for ins in lw.instrs[first:] if id(ins) in ids]


def _regions(op: Operation) -> list[tuple[str, int, int, bool]]:
    assert isinstance(op, esact.InstructionOp)
    instr = op.to_instruction()
    out = []
    for operand in op.isa_spec().operands:
        extent = operand_extent(instr, operand)
        if extent is not None:
            out.append(("dram" if extent[0] is None else extent[0].name, extent[1], extent[2],
                        operand.access == "w"))
    return out


def _conflicting(a: list[Operation], b: list[Operation]) -> bool:
    """Does an instruction of `a` and one of `b` touch a common region, one of them writing?"""
    regions_b = [r for op in b for r in _regions(op)]
    for space, start, end, write in (r for op in a for r in _regions(op)):
        for space_b, start_b, end_b, write_b in regions_b:
            if space == space_b and (write or write_b) and start < end_b and start_b < end:
                return True
    return False


class PredictScratch:
    """ACC tiles of the prediction, at the TOP of each bank in turn.

    The dense lowering's banked ACC tiles start at the bank boundaries and rotate between
    banks; prediction tiles allocated the same way would overlap them, and `schedule` would
    order the K / V GEMMs after the BPU's last use of the bank (a false write-after-read
    dependency that serialises prediction and generation). Slots at the top of each bank stay
    clear of dense tiles up to bank - slot elements. The chain is emitted in one piece while
    no ACC tile is live, so the slots are safe in program order; tiles over a quarter of a
    bank come from the allocator as usual.
    """

    SLOT_FRACTION = 4  # a slot takes at most this fraction of a bank

    def __init__(self, lw: Lowering, buf: Buffer, size: int):
        self.lw, self.buf = lw, buf
        allocator = lw.rings[buf]
        bank = getattr(allocator, "bank_size", allocator.capacity)
        banks = allocator.capacity // bank
        usable = not allocator.live and size <= bank // self.SLOT_FRACTION
        self.slots = [(i + 1) * bank - size for i in reversed(range(banks))] if usable else []
        if len(self.slots) == 1:  # one region: two slots so consecutive tiles alternate
            self.slots.append(self.slots[0] - size)
        self.next = 0

    def alloc(self, size: int) -> int:
        if not self.slots:
            return self.lw.alloc(self.buf, size)
        addr = self.slots[self.next % len(self.slots)]
        self.next += 1
        return addr

    def free(self, addr: int) -> None:
        if not self.slots:
            self.lw.free(self.buf, addr)


def lower_stray(lw: Lowering, op: Operation) -> None:
    raise fail(op, "spls prediction ops are lowered as the chain insert-spls emits "
                "(hlog_quantize -> predict_attention -> topk -> local_similarity)")


PREDICTION_RULES: dict[type[Operation], Rule] = {
    spls.HLogQuantizeOp: lower_prediction,  # type: ignore[dict-item]
    spls.PredictAttentionOp: lower_stray,
    spls.TopKOp: lower_stray,
    spls.LocalSimilarityOp: lower_stray,
}
"""The prediction rules: spls op class -> the function emitting its instructions."""
