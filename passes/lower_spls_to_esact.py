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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from esact_cc.dialects import esact, spls, transformer
from esact_cc.passes import lower_to_esact as dense
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import MAX_INT8_HLOG_BITS, Buffer, SimilarityMode, operand_extent
from xdsl.ir import Operation, SSAValue

from esact_cc.interpret_quantized_ops import (
    attention_output_scale,
    attention_score_scale,
    linear_dequant_scale,
)
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.reference_interpreter import op_label

F32 = dense.F32
PREDICT = "predict"
X_CODE_TERMS = 0.8
"""Assumed mean shift-add terms of an HLog code of X (0, 1 or 2; zeros are skipped; 0.8 was
measured on BERT-base at 4 bits): only used to estimate BPU cycles when spreading the K / V
GEMMs over the prediction."""
CODE_SLOTS = 2
"""ABUF / VBUF slots for the HLog weight-code tiles and their DEQUANT vectors (double
buffered: the load of tile j + 2 waits for the BPU of tile j)."""
SIMILARITY_MODES = {"overlap": SimilarityMode.OVERLAP, "cosprob": SimilarityMode.COSPROB}
ATTENTION_OPS = (transformer.AttentionOp,)


def _is_masked_linear(op: Operation, kind: str | None = None) -> bool:
    """An INT8 linear with a mask (`kind`: "rows" or "keys", else either)."""
    if not (isinstance(op, transformer.LinearOp) and op.is_quantized and op.is_masked):
        return False
    return kind is None or getattr(op, kind) is not None


@dataclass
class LayerMasks:
    """MBUF addresses of one prediction's outputs (per batch element b: + b * size)."""

    batch: int
    length: int
    heads: int
    reuse_map: int  # L little-endian int16 per batch element (2 L MBUF bytes)
    row_mask: int  # L bytes, 1 = computed row
    key_mask: int  # H x L bytes
    spa: int | None  # H x L x L bytes, kept only when a sparse attention reads it
    users: set[Operation] = field(default_factory=set)
    """Masked ops still to be lowered; the MBUF regions are freed after the last one."""
    chunks: list[tuple[int, int]] = field(default_factory=list)
    """(first row, rows) of each prediction chunk (one SIMILARITY each, per batch element)."""
    x: SSAValue | None = None
    """The prediction's input: a row-masked linear of it gets one GEMM per chunk."""


@dataclass
class SplsState:
    """Per-lowering state of the sparse rules (kept on the `_Lowering` object)."""

    masks: dict[SSAValue, LayerMasks] = field(default_factory=dict)
    planned: bool = False


def _state(lw: dense._Lowering) -> SplsState:
    state = getattr(lw, "spls_state", None)
    if state is None:
        state = SplsState()
        lw.spls_state = state  # type: ignore[attr-defined]
    return state


def _shape(value: SSAValue) -> tuple[int, ...]:
    return dense._shape(value)


def _fail(op: Operation, message: str) -> CompileError:
    return CompileError(f"lower-to-esact: {op_label(op)}: {message}")


# ----------------------------------------------------------------------------- formats


def _plan_int8_inputs(lw: dense._Lowering, block_ops: list[Operation]) -> None:
    """Let masked linears read INT8 copies like dense ones: a value whose every consumer is a
    (dense or masked) quantized linear with one input scale is written in INT8 only (dense
    `plan_activation_formats` only knows `quantized.linear`). Values already produced are left
    as planned."""
    for op in block_ops:
        for value in op.results:
            uses = list(value.uses)
            if not uses or any(not (isinstance(u.operation, transformer.LinearOp)
                                    and u.operation.is_quantized and u.index == 0) for u in uses):
                continue
            scales = {float(u.operation.input_scale.value.data) for u in uses}  # type: ignore[attr-defined]
            if len(scales) == 1 and value not in lw.tensors and value not in lw.int8_tensors:
                lw.int8_scale[value] = scales.pop()
                if not any(dense._is_dense_int8_linear(u.operation) for u in uses):
                    lw.fp32_needed.discard(value)


def _ensure_planned(lw: dense._Lowering, op: Operation) -> None:
    state = _state(lw)
    if not state.planned:
        state.planned = True
        block = op.parent_block()
        assert block is not None
        start = block.get_operation_index(op)
        ops = list(block.ops)[start:]
        returned = ops[-1].operands if ops else ()
        _plan_int8_inputs(lw, ops)
        lw.fp32_needed.update(returned)


# ----------------------------------------------------------------------------- prediction


def _single_user(value: SSAValue, kind: type[Operation], what: Operation) -> Operation:
    users = [u.operation for u in value.uses]
    if len(users) != 1 or not isinstance(users[0], kind):
        raise _fail(what, f"expected exactly one {kind.name} user (the insert-spls chain)")  # type: ignore[attr-defined]
    return users[0]


def lower_prediction(lw: dense._Lowering, op: spls.HLogQuantizeOp) -> None:
    """The whole prediction chain of one layer (see the module docstring)."""
    _ensure_planned(lw, op)
    predict = _single_user(op.codes, spls.PredictAttentionOp, op)
    assert isinstance(predict, spls.PredictAttentionOp)
    if [u.operation for u in op.code_scale.uses] != [predict]:
        raise _fail(op, "the HLog scale must feed the prediction only")
    pam_users = [u.operation for u in predict.result.uses]
    topks = [u for u in pam_users if isinstance(u, spls.TopKOp)]
    if len(topks) != 1 or any(not isinstance(u, (spls.TopKOp, spls.LocalSimilarityOp))
                              for u in pam_users):
        raise _fail(predict, "PAM must feed one spls.topk (and the similarity's probs)")
    topk = topks[0]
    sims = [u.operation for u in topk.result.uses if isinstance(u.operation, spls.LocalSimilarityOp)]
    if len(sims) != 1:
        raise _fail(topk, "SPA must feed exactly one spls.local_similarity")
    sim = sims[0]
    assert isinstance(sim, spls.LocalSimilarityOp)
    if sim.pam is not None and sim.pam is not predict.result:
        raise _fail(sim, "the similarity's probs must be the layer's PAM")
    spa_users = [u.operation for u in topk.result.uses if u.operation is not sim]
    if any(not (isinstance(u, transformer.AttentionOp) and u.spa is not None) for u in spa_users):
        raise _fail(topk, "SPA may feed only the similarity and sparse attentions")
    if op.scale is not None:
        raise _fail(op, "a static HLog scale is not supported (insert-spls emits dynamic ones)")
    bits = op.bits.value.data
    if bits > MAX_INT8_HLOG_BITS or predict.bits.value.data > MAX_INT8_HLOG_BITS:
        raise _fail(op, f"hlog-bits > {MAX_INT8_HLOG_BITS} is not supported (int8 code buffers)")
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
    hint = dense.node_name(predict) or "spls.predict"
    c8 = lw.constant(f"{hint}.qk_hlog_codes", codes)
    cv = lw.constant(f"{hint}.qk_hlog_dequant", vectors.astype(np.float32))
    # HLog codes of W in ABUF slots: WBUF banks hold the K / V weight tiles meanwhile.
    # Column tiles small enough for an ACC slot at the top of a bank (PredictScratch).
    acc_bank = getattr(lw.rings[Buffer.ACC], "bank_size", lw.capacity(Buffer.ACC))
    n_limit = min(lw.capacity(Buffer.ABUF) // 8 // width_in,
                  acc_bank // PredictScratch.SLOT_FRACTION // rows)
    if n_limit < 1:
        raise _fail(predict, f"the prediction of {rows} rows x {width_in} inputs exceeds the "
                    "on-chip buffers")
    # Q^ and K^ columns in one pass when [rows, 2N] FP32 fits a VBUF output tile, else one
    # pass each (the HLog re-quantization needs all N columns of one of them at once).
    together = rows * both <= lw.capacity(Buffer.VBUF) // dense.OUT_FRACTION
    passes = [(0, both)] if together else [(0, width), (width, both)]
    n_tile = dense._round_tile(n_limit, passes[0][1] - passes[0][0], lw.config.mac_cols)
    acc_buf = PredictScratch(lw, Buffer.ACC, max(rows * n_tile, chunk * length))
    # Every region of the projection is taken now, before the K / V linears are lowered
    # beside it (`_lower_aside`), so their tiles avoid all of them.
    sqk = lw.alloc(Buffer.VBUF, 2 * batch)  # (s_Q, s_K) per batch element, adjacent
    # Phase 2's loads (PAM scale, mask rows) are issued now: in the in-order load queue they
    # would otherwise wait behind the K / V loads, which wait for the compute queue.
    pam_scale = vec_constant("spls.pam_scale", np.full(length, predict.scale.value.data, np.float32),
                             ("spls-pam-scale", length, float(predict.scale.value.data)))
    mask_rows = _MaskRows(lw, predict, predict.mask, batch, heads, length, length)
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
    masks = LayerMasks(batch, length, heads,
                       reuse_map=lw.alloc(Buffer.MBUF, 2 * length * batch),
                       row_mask=lw.alloc(Buffer.MBUF, length * batch),
                       key_mask=lw.alloc(Buffer.MBUF, heads * length * batch),
                       spa=None, chunks=chunks, x=op.x)
    spa = lw.alloc(Buffer.MBUF, spa_size * batch)
    if float_pam and pam is None:
        pam = lw.alloc(Buffer.VBUF, spa_size)
    masks.users = {u.operation for v in (sim.reuse_map, sim.key_mask, topk.result)
                   for u in v.uses if u.operation is not sim}
    state = _state(lw)
    for value in (sim.reuse_map, sim.key_mask, topk.result):
        state.masks[value] = masks
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
                        mask_rows.add_block(b, h, pam + block, r0, n)
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


def _code_slots(lw: dense._Lowering, codes: int, vectors: int) -> list[tuple[int, int]]:
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


def chunk_rows(lw: dense._Lowering, length: int) -> int:
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
                if dense._is_dense_int8_linear(owner) and owner.x is x and owner not in early:
                    early.append(owner)
    return early


def _chunk_consumers(sim: spls.LocalSimilarityOp, x: SSAValue) -> list[Operation]:
    """The row-masked linears of X (the Q projection): one GEMM per prediction chunk."""
    found: list[Operation] = []
    for use in sim.reuse_map.uses:
        user = use.operation
        if _is_masked_linear(user, "rows") and user.x is x and user not in found:
            found.append(user)
    return found


def _lower_now(lw: dense._Lowering, op: Operation) -> None:
    """Lower `op` at this point of the program (it is then skipped where it stands)."""
    saved = lw.current, lw.layer
    lw.current, lw.layer = op, dense.layer_of(dense.node_name(op))
    try:
        dense._LOWERINGS[type(op)](lw, op)
    finally:
        lw.current, lw.layer = saved
    lw.fused.add(op)


def _lower_aside(lw: dense._Lowering, ops: list[Operation],
                 masks: LayerMasks | None) -> list[Operation] | None:
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


def _interleave(lw: dense._Lowering, emitted: set[int], body: list[Operation],
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


def _hoist_preparation(lw: dense._Lowering, body: list[Operation], target: Operation) -> None:
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


def _sink(lw: dense._Lowering, late: list[Operation]) -> None:
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


class _MaskRows:
    """VBUF rows of an additive attention mask [.., 1, Lk] (one row per batch element and
    head, loaded once per op) for SOFTMAX / TOPK `add_mask` operands."""

    def __init__(self, lw: dense._Lowering, op: Operation, mask: SSAValue | None, batch: int,
                 heads: int, lq: int, lk: int):
        self.lw, self.rows = lw, {}
        self.tensor = None if mask is None else lw.f32_tensor(mask, "mask")
        self.shape = (1, 1, 1, lk)
        if self.tensor is not None:
            shape = self.tensor.shape
            self.shape = (1,) * (4 - len(shape)) + tuple(shape)
            if len(shape) > 4 or self.shape[-1] != lk or self.shape[2] not in (1, lq) \
                    or self.shape[0] not in (1, batch) or self.shape[1] not in (1, heads):
                raise _fail(op, f"mask {list(shape)} must broadcast as [B, H, 1 or {lq}, {lk}]")

    @property
    def present(self) -> bool:
        return self.tensor is not None

    @property
    def per_query(self) -> bool:
        return self.present and self.shape[2] != 1

    @property
    def per_head(self) -> bool:
        return self.present and self.shape[1] != 1

    def row(self, b: int, h: int) -> int:
        assert self.tensor is not None and not self.per_query
        key = (b % self.shape[0], h % self.shape[1])
        if key not in self.rows:
            addr = self.lw.alloc(Buffer.VBUF, self.shape[3])
            self.lw.load(Buffer.VBUF, addr, self.tensor.address
                         + (key[0] * self.shape[1] + key[1]) * self.shape[3] * F32, 1, self.shape[3])
            self.rows[key] = addr
        return self.rows[key]

    def block(self, b: int, h: int) -> int:
        """VBUF address of the [Lq, Lk] block of a per-query mask (loaded once)."""
        assert self.tensor is not None and self.per_query
        lq, lk = self.shape[2], self.shape[3]
        key = (b % self.shape[0], h % self.shape[1], "block")
        if key not in self.rows:
            addr = self.lw.alloc(Buffer.VBUF, lq * lk)
            self.lw.load(Buffer.VBUF, addr, self.tensor.address
                         + (key[0] * self.shape[1] + key[1]) * lq * lk * F32, lq, lk)
            self.rows[key] = addr  # type: ignore[index]
        return self.rows[key]  # type: ignore[index]

    def prefetch(self, b: int, h: int) -> None:
        """Load what batch element b, head h needs now (before tiles placed after it)."""
        if self.per_query:
            self.block(b, h)
        elif self.present:
            self.row(b, h)

    def add_block(self, b: int, h: int, dst: int, r0: int, rows: int) -> None:
        """ADD rows [r0, r0 + rows) of the [Lq, Lk] block of a per-query mask to the FP32
        scores at `dst` (VBUF, that many rows).

        In the prediction this ranks masked keys last but does not exclude them from TOPK: a
        row with fewer than k unmasked keys differs from the reference (which never selects
        a masked key); with no padding, or >= k real keys per row, the result is identical.
        """
        lk = self.shape[3]
        self.lw.emit("add", PREDICT, dst_addr=dst, a_addr=dst, b_addr=self.block(b, h) + r0 * lk,
                     rows=rows, cols=lk)

    def free(self) -> None:
        self.lw.free(Buffer.VBUF, *self.rows.values())


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

    def __init__(self, lw: dense._Lowering, buf: Buffer, size: int):
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


def _masks(lw: dense._Lowering, op: Operation, value: SSAValue) -> LayerMasks:
    masks = _state(lw).masks.get(value)
    if masks is None:
        raise _fail(op, "its mask does not come from a lowered spls prediction chain")
    return masks


def _done_with(lw: dense._Lowering, masks: LayerMasks, op: Operation) -> None:
    masks.users.discard(op)
    if not masks.users:
        lw.free(Buffer.MBUF, masks.reuse_map, masks.row_mask, masks.key_mask)
        if masks.spa is not None:
            lw.free(Buffer.MBUF, masks.spa)


def lower_stray(lw: dense._Lowering, op: Operation) -> None:
    raise _fail(op, "spls prediction ops are lowered as the chain insert-spls emits "
                "(hlog_quantize -> predict_attention -> topk -> local_similarity)")


# ----------------------------------------------------------------------------- masked linears


def component_of(op: Operation) -> str:
    """q/k/v/o/ffn1/ffn2 of a (masked) linear from its neighbours, else from its node name."""
    for use in op.results[0].uses:
        if isinstance(use.operation, ATTENTION_OPS) and use.index < 3:
            return ("q", "k", "v")[use.index]
    if any(isinstance(use.operation, transformer.GeluOp) for use in op.results[0].uses):
        return "ffn1"
    producer = op.operands[0].owner
    if isinstance(producer, ATTENTION_OPS):
        return "o"
    if isinstance(producer, transformer.GeluOp):
        return "ffn2"
    return dense._component_from_name(dense.node_name(op))


def lower_masked_linear(lw: dense._Lowering, op: Operation) -> None:
    """Row-masked (reuse map) or key-masked (per head) INT8 linear; see the module docstring."""
    assert _is_masked_linear(op)
    _ensure_planned(lw, op)
    keyed = op.keys is not None
    mask_value = op.keys if keyed else op.rows
    masks = _masks(lw, op, mask_value)
    in_scale = float(op.input_scale.value.data)
    x8 = lw.int8_tensors.get(op.x) if lw.int8_scale.get(op.x) == in_scale else None
    x = lw.f32_tensor(op.x, "x") if x8 is None else x8
    w = lw.tensor_of(op.weight)
    if w.dtype != np.int8:
        raise _fail(op, "weight must be int8 (run quantize first)")
    k, n = w.shape
    batch, length = x.shape[0], x.shape[1]
    if (batch, length) != (masks.batch, masks.length):
        raise _fail(op, f"rows {batch}x{length} do not match its masks")
    scale = linear_dequant_scale(in_scale, lw.weight_array(op.weight_scale, "weight_scale"))
    rows = [scale]
    if op.bias is not None:
        rows.append(lw.weight_array(op.bias, "bias").astype(np.float32).reshape(n))
    sb = lw.constant(f"{dense.node_name(op) or 'linear'}.dequant", np.stack(rows).astype(np.float32))
    has_bias = int(op.bias is not None)
    epilogue, out_value = lw._linear_epilogue(op)  # type: ignore[arg-type]
    component = component_of(op)

    a_cap, w_cap = lw.capacity(Buffer.ABUF) * 3 // 4, lw.capacity(Buffer.WBUF) // dense.HALF
    acc_cap, v_cap = lw.capacity(Buffer.ACC) // dense.HALF, lw.capacity(Buffer.VBUF) // dense.OUT_FRACTION
    if length * k > a_cap or k > w_cap:
        raise _fail(op, f"the {length} rows x {k} inputs of one sequence exceed the on-chip buffers")
    if keyed:
        head_width = n // masks.heads
        n_tile = head_width  # one GEMM per head: the head's key mask is its row mask
        if head_width * k > w_cap or length * head_width > min(acc_cap, v_cap):
            raise _fail(op, "a head's column block exceeds the on-chip buffers")
    else:
        n_limit = min(w_cap // k, acc_cap // length, v_cap // length)
        if n_limit < 1:
            raise _fail(op, f"{length} rows exceed the on-chip accumulator/vector buffers")
        n_tile = dense._round_tile(n_limit, n, lw.config.mac_cols)
    mult = quant_multiplier(in_scale)

    def load_weights(n0: int, hoist: bool = False) -> tuple[int, int]:
        return lw.load_weight_tile(w, sb, n0, n_tile, hoist)

    # The linear of the prediction's own input (Q) is lowered beside the chain: one GEMM per
    # prediction chunk, each waiting only for its chunk's SIMILARITY.
    row_chunks = (masks.chunks if not keyed and op.x is masks.x and masks.chunks
                  else [(0, length)])
    prefetched: tuple[int, int] | None = load_weights(0, hoist=True)
    for b in range(batch):
        m0 = b * length
        a = lw.alloc(Buffer.ABUF, length * k)
        if x8 is not None:
            lw.load(Buffer.ABUF, a, x8.address + m0 * k, length, k)
        else:
            lw.quantize_rows(x, m0, length, 0, k, a, mult)
        for n0 in range(0, n, n_tile):
            nt = min(n_tile, n - n0)
            wt, sv = prefetched if prefetched is not None else load_weights(n0)
            prefetched = None
            row_mask = (masks.key_mask + (b * masks.heads + n0 // n_tile) * length if keyed
                        else masks.row_mask + b * length)
            acc = lw.alloc(Buffer.ACC, length * nt)
            for r0, rows_c in row_chunks:  # rows of one prediction chunk each (or all rows)
                lw.emit("gemm", component, acc_addr=acc + r0 * nt, a_addr=a + r0 * k, w_addr=wt,
                        m=rows_c, k=k, n=nt, has_row_mask=1, row_mask_addr=row_mask + r0)
            lw.free(Buffer.WBUF, wt)
            o = lw.alloc(Buffer.VBUF, length * nt)
            lw.emit("dequant", "sfu", dst_addr=o, src_addr=acc, rows=length, cols=nt,
                    scale_addr=sv, has_bias=has_bias, bias_addr=sv + nt * has_bias)
            lw.free(Buffer.ACC, acc)
            lw.free(Buffer.VBUF, sv)
            if not keyed:  # reused rows take their representative's output row
                lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=o, src_addr=o,
                        rows=length, cols=nt, map_addr=masks.reuse_map + 2 * length * b)
            if epilogue is not None:
                epilogue(o, m0, length, n0, nt)
            lw.write_tile(out_value, o, m0, length, n0, nt)
            lw.free(Buffer.VBUF, o)
        lw.free(Buffer.ABUF, a)
    _done_with(lw, masks, op)


# ----------------------------------------------------------------------------- attention


def lower_masked_attention(lw: dense._Lowering, op: Operation) -> None:
    """Row-reuse (and, for spls.sparse_*, SPA) masked INT8 attention; see the docstring."""
    assert isinstance(op, transformer.AttentionOp) and op.rows is not None
    _ensure_planned(lw, op)
    masks = _masks(lw, op, op.rows)
    sparse = op.spa is not None
    if sparse and masks.spa is None:
        raise _fail(op, "its SPA mask is not on chip")
    q, k, v = (lw.f32_tensor(val, name) for val, name in ((op.q, "q"), (op.k, "k"), (op.v, "v")))
    batch, lq, width = q.shape
    lk, width_v = k.shape[1], v.shape[2]
    heads = op.num_heads.value.data
    d, dv = width // heads, width_v // heads
    causal = op.causal is not None
    s_scale = attention_score_scale(op.scale.value.data, op.q_scale.value.data, op.k_scale.value.data)
    o_scale = attention_output_scale(op.p_scale.value.data, op.v_scale.value.data)
    s_vec = lw.constant("attention.score_scale", np.full(lk, s_scale, np.float32), ("s", lk, float(s_scale)))
    o_vec = lw.constant("attention.output_scale", np.full(dv, o_scale, np.float32), ("o", dv, float(o_scale)))
    q_mult, k_mult, v_mult, p_mult = (quant_multiplier(s.value.data) for s in
                                      (op.q_scale, op.k_scale, op.v_scale, op.p_scale))
    per_head = (lq + lk) * d + lk * dv
    group = max(1, min(heads, lw.capacity(Buffer.ABUF) // dense.HALF // per_head))
    if per_head + 2 * lq * lk > lw.capacity(Buffer.ABUF) or \
            lq * lk > lw.capacity(Buffer.VBUF) // dense.OUT_FRACTION:
        raise _fail(op, f"attention over {lq}x{lk} does not fit the on-chip buffers")
    s_addr = lw.alloc(Buffer.VBUF, lk)
    lw.load(Buffer.VBUF, s_addr, s_vec.address, 1, lk)
    o_addr = lw.alloc(Buffer.VBUF, dv)
    lw.load(Buffer.VBUF, o_addr, o_vec.address, 1, dv)
    causal_fields = {"causal": int(causal), "causal_offset": lk - lq if causal else 0}
    mask_rows = _MaskRows(lw, op, op.mask, batch, heads, lq, lk)

    def spa_of(b: int, h: int) -> dict[str, int]:
        if not sparse:
            return {}
        assert masks.spa is not None
        return {"has_mask": 1, "mask_addr": masks.spa + (b * heads + h) * lq * lk}

    def pv(b: int, h0: int, g: int, hh: int, p: int, va: int) -> None:
        h = h0 + hh
        acc = lw.alloc(Buffer.ACC, lq * dv)
        lw.emit("attn_pv", "pv", out_addr=acc, p_addr=p, v_addr=va + hh * dv, lq=lq, lk=lk, d=dv,
                v_stride=g * dv, has_row_mask=1, row_mask_addr=masks.row_mask + b * lq,
                **spa_of(b, h))
        lw.free(Buffer.ABUF, p)
        r = lw.alloc(Buffer.VBUF, lq * dv)
        lw.emit("dequant", "sfu", dst_addr=r, src_addr=acc, rows=lq, cols=dv, scale_addr=o_addr)
        lw.free(Buffer.ACC, acc)
        lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=r, src_addr=r, rows=lq, cols=dv,
                map_addr=masks.reuse_map + 2 * lq * b)
        lw.write_tile(op.result, r, b * lq, lq, h * dv, dv)
        lw.free(Buffer.VBUF, r)

    for b in range(batch):
        for h0 in range(0, heads, group):
            g = min(group, heads - h0)
            qa = lw.alloc(Buffer.ABUF, lq * g * d)
            ka = lw.alloc(Buffer.ABUF, lk * g * d)
            va = lw.alloc(Buffer.ABUF, lk * g * dv)
            # Q last: the sparse lowering produces it after K and V (beside the prediction),
            # so the in-order load queue fetches K and V while Q's last GEMMs still run.
            lw.quantize_rows(k, b * lk, lk, h0 * d, g * d, ka, k_mult)
            lw.quantize_rows(v, b * lk, lk, h0 * dv, g * dv, va, v_mult)
            lw.quantize_rows(q, b * lq, lq, h0 * d, g * d, qa, q_mult)
            pending: list[tuple[int, int]] = []  # (head in group, P address) waiting for P x V
            for hh in range(g):
                h = h0 + hh
                scores = lw.alloc(Buffer.ACC, lq * lk)
                lw.emit("attn_qk", "qk", scores_addr=scores, q_addr=qa + hh * d, k_addr=ka + hh * d,
                        lq=lq, lk=lk, d=d, q_stride=g * d, k_stride=g * d, has_row_mask=1,
                        row_mask_addr=masks.row_mask + b * lq, **spa_of(b, h))
                f = lw.alloc(Buffer.VBUF, lq * lk)
                lw.emit("dequant", "sfu", dst_addr=f, src_addr=scores, rows=lq, cols=lk,
                        scale_addr=s_addr)
                lw.free(Buffer.ACC, scores)
                elem = ({"has_elem_mask": 1, "elem_mask_addr": spa_of(b, h)["mask_addr"]}
                        if sparse else {})
                if mask_rows.per_query:  # as the dense lowering: ADD the [lq, lk] block
                    assert mask_rows.tensor is not None
                    shape = mask_rows.shape
                    mm = lw.alloc(Buffer.VBUF, lq * lk)
                    base = ((b % shape[0]) * shape[1] + h % shape[1]) * lq * lk
                    lw.load(Buffer.VBUF, mm, mask_rows.tensor.address + base * F32, lq, lk)
                    lw.emit("add", "sfu", dst_addr=f, a_addr=f, b_addr=mm, rows=lq, cols=lk)
                    lw.free(Buffer.VBUF, mm)
                elif mask_rows.present:
                    elem.update(has_add_mask=1, add_mask_addr=mask_rows.row(b, h))
                lw.emit("softmax", "sfu", dst_addr=f, src_addr=f, rows=lq, cols=lk, scale=1.0,
                        **causal_fields, **elem)
                p = lw.alloc(Buffer.ABUF, lq * lk)
                lw.emit("quant", "sfu", dst_addr=p, src_addr=f, rows=lq, cols=lk, mult=float(p_mult))
                lw.free(Buffer.VBUF, f)
                pending.append((hh, p))
                if len(pending) == 2:
                    pv(b, h0, g, *pending.pop(0), va)
            for hh, p in pending:
                pv(b, h0, g, hh, p, va)
            lw.free(Buffer.ABUF, qa, ka, va)
    mask_rows.free()
    lw.free(Buffer.VBUF, s_addr, o_addr)
    _done_with(lw, masks, op)


LOWERINGS: dict[type[Operation], Callable[[dense._Lowering, Operation], None]] = {
    spls.HLogQuantizeOp: lower_prediction,  # type: ignore[dict-item]
    spls.PredictAttentionOp: lower_stray,
    spls.TopKOp: lower_stray,
    spls.LocalSimilarityOp: lower_stray,
}
"""The sparse rules: spls op class -> the function emitting its instructions."""

dense._LOWERINGS.update(LOWERINGS)
dense._SPARSE_LOWERINGS.update(linear=lower_masked_linear, attention=lower_masked_attention)
