"""Instruction selection for `transformer.linear` and `transformer.attention` (INT8), with or
without masks: one rule each, the mask forms are parameters of it.

Masks are read from MBUF whatever produced them (`mask_tiles`): the regions an SPLS prediction
chain left there (`passes/lower_spls_to_esact.py` registers them in `Lowering.masks`), or a
constant of the weight store (a test-defined scheme), which is converted once to the hardware's
mask formats (row mask bytes, int16 reuse map, key / SPA bytes, one copy per batch element) and
LOADed. The regions are freed after the last op reading them.

linear (x [.., in] @ W [in, out], INT8 W, per-channel scales):
- dense: row tiles of all rows, per input group QUANT (or LOAD of an INT8 copy of x), GEMM,
  DEQUANT (later groups ADD their FP32 partial);
- `rows(%map)`: one row tile per batch element (all L rows), GEMM with the computed-row mask
  (reused rows are neither computed nor written; the linear of the SPLS prediction's input gets
  one GEMM per prediction chunk), DEQUANT, SCATTER_ROWS with the reuse map;
- `keys(%mask)`: one GEMM per head column block with that head's key mask as row mask. Rows a
  head does not select are NOT zeroed (the reference interpreter zeroes them): no computed
  attention row reads them (the key mask is the union of the computed rows' SPA).
Then the fused GELU or residual ADD when that op is the linear's only user, and the STOREs.

attention: per batch element and head group, LOAD + QUANT of the Q, K, V column blocks (K, V,
then Q when masked: the SPLS lowering produces Q last; with `kv_heads` < heads, grouped-query
attention, the group's K / V blocks are the K / V heads its query heads read: head h reads
K / V head h // (heads / kv_heads)); per head ATTN_QK, DEQUANT (scale
folded), [ADD a per-query mask], SOFTMAX (additive row mask, causal), QUANT P, ATTN_PV, DEQUANT,
STORE; heads are software-pipelined (QK of head h+1 before PV of head h). When one head's [Lq, Lk]
scores do not fit (VBUF quarter, ACC, ABUF with Q, K, V and P), dense attention runs in query
tiles of whole key rows (`_attention_tiling`): K / V stay on chip across a head group's tiles,
each tile's softmax sees all its keys, so nothing is recomputed and the result is unchanged;
attention that fits is one tile (the same program as before tiling existed). With `rows(%map)`
ATTN_QK / ATTN_PV skip reused rows and SCATTER_ROWS fills them; with `spa(%mask)` the element
mask restricts ATTN_QK, SOFTMAX and ATTN_PV to each row's keys.
"""

from __future__ import annotations

import numpy as np
from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.lowering_state import (
    F32,
    HALF,
    MAX_DIM,
    OUT_FRACTION,
    DramTensor,
    Lowering,
    MaskTiles,
    is_dense_int8_linear,
    node_name,
    round_tile,
    shape_of,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from xdsl.ir import Operation, SSAValue

from esact_cc.quantized_kernels import (
    attention_output_scale,
    attention_score_scale,
    input_groups,
    linear_dequant_scale,
    quant_multiplier,
)
from esact_cc.ir_queries import op_label


def fail(op: Operation, message: str) -> CompileError:
    return CompileError(f"lower-to-esact: {op_label(op)}: {message}")


# ----------------------------------------------------------------------------- masks


def plan_masked_inputs(lw: Lowering, op: Operation) -> None:
    """At the first masked op: let masked linears read INT8 copies like dense ones. A value
    (from here on) whose every consumer is an INT8 linear with one input scale is written in
    INT8 only (`plan_activation_formats` plans for dense linears). Values already produced are
    left as planned."""
    if lw.masked_inputs_planned:
        return
    lw.masked_inputs_planned = True
    block = op.parent_block()
    assert block is not None
    ops = list(block.ops)[block.get_operation_index(op):]
    for producer in ops:
        for value in producer.results:
            uses = list(value.uses)
            if not uses or any(not (isinstance(u.operation, transformer.LinearOp)
                                    and u.operation.is_quantized and u.index == 0) for u in uses):
                continue
            scales = {float(u.operation.input_scale.value.data) for u in uses}  # type: ignore[attr-defined]
            if len(scales) == 1 and value not in lw.tensors and value not in lw.int8_tensors:
                lw.int8_scale[value] = scales.pop()
                if not any(is_dense_int8_linear(u.operation) for u in uses):
                    lw.fp32_needed.discard(value)
    lw.fp32_needed.update(ops[-1].operands if ops else ())


def mask_tiles(lw: Lowering, op: Operation, value: SSAValue, kind: str) -> MaskTiles:
    """The MBUF masks `value` stands for (`kind`: rows, keys or spa), loading a weight-store
    constant on its first use."""
    tiles = lw.masks.get(value)
    if tiles is None:
        if not isinstance(value.owner, WeightOp):
            raise fail(op, f"its {kind} mask comes neither from a lowered spls prediction chain "
                       "nor from the weight store")
        tiles = _load_constant_mask(lw, op, value, kind)
    return tiles


def _load_constant_mask(lw: Lowering, op: Operation, value: SSAValue, kind: str) -> MaskTiles:
    owner = value.owner
    assert isinstance(owner, WeightOp)
    name = owner.weight_name.data
    array = np.asarray(lw.store[name])
    batch, length = shape_of(op.operands[0])[:2]
    rank = {"rows": 2, "keys": 3, "spa": 4}[kind]
    array = np.broadcast_to(array, (batch, *array.shape)) if array.ndim == rank - 1 else array
    tiles = MaskTiles(batch, length, array.shape[1] if rank > 2 else 1,
                      users={use.operation for use in value.uses})
    if kind == "rows":
        if np.any((array < -1) | (array >= length)):
            raise fail(op, f"reuse map '{name}' holds a row outside [-1, {length})")
        for b in range(batch):
            reused = array[b][array[b] >= 0]
            if np.any(array[b][reused] >= 0):
                raise fail(op, f"reuse map '{name}': a reused row takes a row that is reused too")
        tiles.row_mask = _load_mbuf(lw, f"{name}.row_mask", (array < 0).astype(np.uint8))
        tiles.reuse_map = _load_mbuf(lw, f"{name}.map", array.astype("<i2").view(np.uint8))
    else:
        regions = _load_mbuf(lw, f"{name}.bytes", (array != 0).astype(np.uint8))
        setattr(tiles, "key_mask" if kind == "keys" else "spa", regions)
    lw.masks[value] = tiles
    return tiles


def _load_mbuf(lw: Lowering, hint: str, data: np.ndarray) -> int:
    """LOAD a mask constant (bytes, one row per leading index) into MBUF."""
    rows = data.reshape(data.shape[0] * (data.shape[1] if data.ndim > 2 else 1), -1)
    t = lw.constant(hint, rows)
    addr = lw.alloc(Buffer.MBUF, rows.size)
    lw.load(Buffer.MBUF, addr, t.address, *rows.shape)
    return addr


def done_with(lw: Lowering, op: Operation, *tiles: MaskTiles) -> None:
    """`op` no longer needs these masks: free each set whose last user it was."""
    for t in {id(t): t for t in tiles}.values():
        t.users.discard(op)
        if not t.users:
            lw.free(Buffer.MBUF, *t.regions())


class MaskRows:
    """VBUF rows of an additive attention mask [.., 1, Lk] (one row per batch element and
    head, loaded once per op) for SOFTMAX / TOPK `add_mask` operands, and blocks of a
    per-query one [.., Lq, Lk]."""

    def __init__(self, lw: Lowering, op: Operation, mask: SSAValue | None, batch: int,
                 heads: int, lq: int, lk: int):
        self.lw, self.rows = lw, {}
        self.tensor = None if mask is None else lw.f32_tensor(mask, "mask")
        self.shape = (1, 1, 1, lk)
        if self.tensor is not None:
            dims = self.tensor.shape
            self.shape = (1,) * (4 - len(dims)) + tuple(dims)
            if len(dims) > 4 or self.shape[-1] != lk or self.shape[2] not in (1, lq) \
                    or self.shape[0] not in (1, batch) or self.shape[1] not in (1, heads):
                raise fail(op, f"mask {list(dims)} must broadcast as [B, H, 1 or {lq}, {lk}]")

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

    def add_block(self, b: int, h: int, dst: int, r0: int, rows: int, component: str) -> None:
        """ADD rows [r0, r0 + rows) of the [Lq, Lk] block of a per-query mask to the FP32
        scores at `dst` (VBUF, that many rows)."""
        lk = self.shape[3]
        self.lw.emit("add", component, dst_addr=dst, a_addr=dst, b_addr=self.block(b, h) + r0 * lk,
                     rows=rows, cols=lk)

    def add_fresh_block(self, b: int, h: int, dst: int, r0: int, rows: int) -> None:
        """ADD rows [r0, r0 + rows) of the [Lq, Lk] block of a per-query mask to the scores at
        `dst`, loaded for this head and query tile alone (the attention streams it)."""
        lq, lk = self.shape[2], self.shape[3]
        assert self.tensor is not None
        mm = self.lw.alloc(Buffer.VBUF, rows * lk)
        base = (((b % self.shape[0]) * self.shape[1] + h % self.shape[1]) * lq + r0) * lk
        self.lw.load(Buffer.VBUF, mm, self.tensor.address + base * F32, rows, lk)
        self.lw.emit("add", "sfu", dst_addr=dst, a_addr=dst, b_addr=mm, rows=rows, cols=lk)
        self.lw.free(Buffer.VBUF, mm)

    def free(self) -> None:
        self.lw.free(Buffer.VBUF, *self.rows.values())


# ----------------------------------------------------------------------------- linear


def lower_linear(lw: Lowering, op: transformer.LinearOp) -> None:
    """INT8 linear, dense or masked (see the module docstring)."""
    if op.is_masked:
        plan_masked_inputs(lw, op)
    groups = lw.input_format(op)
    x8 = lw.int8_tensors.get(op.x) if lw.format_of(op.x) == groups else None
    if x8 is None and op.x in lw.int8_tensors and op.x not in lw.fp32_needed:
        raise CompileError(f"{op_label(op)}: its input was only written in another INT8 format")
    x = lw.f32_tensor(op.x, "x") if x8 is None else x8
    w = lw.tensor_of(op.weight)
    if w.dtype != np.int8:
        raise CompileError(f"{op_label(op)}: weight must be int8 (run quantize first)")
    k, n = w.shape
    weight_scale = lw.weight_array(op.weight_scale, "weight_scale")
    # One DEQUANT scale row per input group (group scale x weight scale), then the bias.
    rows = [linear_dequant_scale(scale, weight_scale) for scale in _input_scales(lw, op)]
    has_bias = int(op.bias is not None)
    if has_bias:
        rows.append(lw.weight_array(op.bias, "bias").astype(np.float32).reshape(n))
    sb = lw.constant(f"{node_name(op) or 'linear'}.dequant", np.stack(rows).astype(np.float32))
    bias_row = len(groups)
    epilogue, out_value = lw.linear_epilogue(op)
    component = lw.component_of(op)
    mask_value = op.rows if op.rows is not None else op.keys
    tiles = None if mask_value is None else mask_tiles(
        lw, op, mask_value, "rows" if op.rows is not None else "keys")
    row_tiles, n_tile = _linear_tiling(lw, op, x, k, n, len(groups), tiles)
    keyed = op.keys is not None

    def load_weights(n0: int, hoist: bool = False) -> tuple[int, int]:
        return lw.load_weight_tile(w, sb, n0, n_tile, hoist)

    # The first weight tile is loaded before the activations: it depends on nothing, so the
    # load queue fetches it while the producer of x is still running.
    prefetched: tuple[int, int] | None = load_weights(0, hoist=True)
    for m0, mt in row_tiles:
        a = lw.alloc(Buffer.ABUF, mt * k)
        if x8 is not None:  # produced already quantized the way this linear quantizes it
            lw.load(Buffer.ABUF, a, x8.address + m0 * k, mt, k)
        else:
            lw.quantize_rows(x, m0, mt, 0, k, a, groups)
        for n0 in range(0, n, n_tile):
            nt = min(n_tile, n - n0)
            wt, sv = prefetched if prefetched is not None else load_weights(n0)
            prefetched = None
            o = -1
            for g, (start, end, _) in enumerate(groups):
                acc = lw.alloc(Buffer.ACC, mt * nt)
                _emit_gemms(lw, op, component, tiles, acc=acc, a=a + start, w=wt + start * nt,
                            m0=m0, mt=mt, k=k, width=end - start, n0=n0, nt=nt, n_tile=n_tile)
                if g == 0:
                    o = lw.alloc(Buffer.VBUF, mt * nt)
                    lw.emit("dequant", "sfu", dst_addr=o, src_addr=acc, rows=mt, cols=nt, scale_addr=sv,
                            has_bias=has_bias, bias_addr=sv + bias_row * nt * has_bias)
                else:  # partial of a later input group: dequantize and add (group order)
                    t = lw.alloc(Buffer.VBUF, mt * nt)
                    lw.emit("dequant", "sfu", dst_addr=t, src_addr=acc, rows=mt, cols=nt,
                            scale_addr=sv + g * nt)
                    lw.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=t, rows=mt, cols=nt)
                    lw.free(Buffer.VBUF, t)
                lw.free(Buffer.ACC, acc)
            lw.free(Buffer.WBUF, wt)
            lw.free(Buffer.VBUF, sv)
            if tiles is not None and not keyed:  # reused rows take their representative's row
                lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=o, src_addr=o, rows=mt,
                        cols=nt, map_addr=tiles.reuse_map + 2 * m0)
            if epilogue is not None:
                epilogue(o, m0, mt, n0, nt)
            lw.write_tile(out_value, o, m0, mt, n0, nt)
            lw.free(Buffer.VBUF, o)
        lw.free(Buffer.ABUF, a)
    if tiles is not None:
        done_with(lw, op, tiles)


def _input_scales(lw: Lowering, op: transformer.LinearOp) -> list[float]:
    """The input scale of each input group of `op` (one: its per-tensor input scale)."""
    k = shape_of(op.x)[-1]
    scales = None if op.group_scales is None else np.asarray(lw.store[op.group_scales.data])
    size = None if op.group_size is None else op.group_size.value.data
    return [scale for _, _, scale in input_groups(k, size, scales, op.input_scale.value.data)]


def _linear_tiling(lw: Lowering, op: transformer.LinearOp, x: DramTensor, k: int, n: int,
                   group_count: int, tiles: MaskTiles | None) -> tuple[list[tuple[int, int]], int]:
    """(first row, rows) of each row tile, and the column tile width. Dense: tiles of all rows
    as large as the buffers allow; masked: one tile per batch element (the masks are per
    sequence), and with a key mask one column tile per head."""
    a_cap, w_cap = lw.capacity(Buffer.ABUF) * 3 // 4, lw.capacity(Buffer.WBUF) // HALF
    acc_cap, v_cap = lw.capacity(Buffer.ACC) // HALF, lw.capacity(Buffer.VBUF) // OUT_FRACTION
    if tiles is None:
        m = x.rows
        if k > a_cap or k > w_cap:
            raise CompileError(f"{op_label(op)}: input width {k} exceeds the on-chip buffers")
        m_tile = round_tile(min(m, a_cap // k, MAX_DIM), m, lw.config.mac_rows)
        nt_limit = min(w_cap // k, acc_cap // m_tile,
                       v_cap // (2 * m_tile) if group_count > 1 else v_cap // m_tile)
        return ([(m0, min(m_tile, m - m0)) for m0 in range(0, m, m_tile)],
                round_tile(nt_limit, n, lw.config.mac_cols))
    batch, length = x.shape[0], x.shape[1]
    if (batch, length) != (tiles.batch, tiles.length):
        raise fail(op, f"rows {batch}x{length} do not match its masks")
    if length * k > a_cap or k > w_cap:
        raise fail(op, f"the {length} rows x {k} inputs of one sequence exceed the on-chip buffers")
    row_tiles = [(b * length, length) for b in range(batch)]
    if op.keys is not None:
        head_width = n // tiles.heads  # one GEMM per head: the head's key mask is its row mask
        if head_width * k > w_cap or length * head_width > min(acc_cap, v_cap):
            raise fail(op, "a head's column block exceeds the on-chip buffers")
        return row_tiles, head_width
    n_limit = min(w_cap // k, acc_cap // length, v_cap // length)
    if n_limit < 1:
        raise fail(op, f"{length} rows exceed the on-chip accumulator/vector buffers")
    return row_tiles, round_tile(n_limit, n, lw.config.mac_cols)


def _emit_gemms(lw: Lowering, op: transformer.LinearOp, component: str, tiles: MaskTiles | None,
                *, acc: int, a: int, w: int, m0: int, mt: int, k: int, width: int, n0: int,
                nt: int, n_tile: int) -> None:
    """The GEMM(s) of one tile: unmasked one GEMM (of one input group: `width` of the `k`
    input columns); with a mask one per SPLS prediction chunk of the sequence (one chunk when
    the linear does not read the prediction's input), each with its rows' mask."""
    if tiles is None:
        lw.emit("gemm", component, acc_addr=acc, a_addr=a, w_addr=w, m=mt, k=width, n=nt,
                a_stride=k if width < k else 0)
        return
    b = m0 // tiles.length
    if op.keys is not None:
        row_mask = tiles.key_mask + (b * tiles.heads + n0 // n_tile) * tiles.length
    else:
        row_mask = tiles.row_mask + b * tiles.length
    chunks = (tiles.chunks if op.keys is None and op.x is tiles.x and tiles.chunks
              else [(0, tiles.length)])
    for r0, rows in chunks:
        lw.emit("gemm", component, acc_addr=acc + r0 * nt, a_addr=a + r0 * k, w_addr=w, m=rows,
                k=k, n=nt, has_row_mask=1, row_mask_addr=row_mask + r0)


# ----------------------------------------------------------------------------- attention


def lower_attention(lw: Lowering, op: transformer.AttentionOp) -> None:
    """INT8 attention, dense or with row reuse / SPA masks (see the module docstring)."""
    rows, spa = _attention_mask_tiles(lw, op)
    q, k, v = (lw.f32_tensor(val, name) for val, name in ((op.q, "q"), (op.k, "k"), (op.v, "v")))
    batch, lq, width = q.shape
    lk, width_v = k.shape[1], v.shape[2]
    heads, kv_heads = op.heads, op.key_heads
    share = heads // kv_heads  # query heads per K / V head (> 1: grouped-query; verified)
    d, dv = width // heads, width_v // kv_heads
    causal = op.causal is not None
    s_scale = attention_score_scale(op.scale.value.data, op.q_scale.value.data, op.k_scale.value.data)
    o_scale = attention_output_scale(op.p_scale.value.data, op.v_scale.value.data)
    s_vec = lw.constant("attention.score_scale", np.full(lk, s_scale, np.float32), ("s", lk, float(s_scale)))
    o_vec = lw.constant("attention.output_scale", np.full(dv, o_scale, np.float32), ("o", dv, float(o_scale)))
    q_mult, k_mult, v_mult, p_mult = (quant_multiplier(s) for s in op.int8_scales())
    q_tile, group = _attention_tiling(lw, op, lq, lk, d, dv)
    s_addr = lw.alloc(Buffer.VBUF, lk)
    lw.load(Buffer.VBUF, s_addr, s_vec.address, 1, lk)
    o_addr = lw.alloc(Buffer.VBUF, dv)
    lw.load(Buffer.VBUF, o_addr, o_vec.address, 1, dv)
    mask_rows = MaskRows(lw, op, op.mask, batch, heads, lq, lk)

    def masks_of(b: int, h: int) -> dict[str, int]:
        """ATTN_QK / ATTN_PV mask fields of batch element b, head h (masked attention is
        never query-tiled: one tile of all lq rows)."""
        fields = {}
        if rows is not None:
            fields.update(has_row_mask=1, row_mask_addr=rows.row_mask + b * lq)
        if spa is not None:
            fields.update(has_mask=1, mask_addr=spa.spa + (b * heads + h) * lq * lk)
        return fields

    def kv_heads_of(h0: int, g: int) -> tuple[int, int]:
        """(first K / V head, K / V heads) that query heads [h0, h0 + g) read."""
        return h0 // share, (h0 + g - 1) // share - h0 // share + 1

    def pv(b: int, h0: int, g: int, r0: int, tq: int, hh: int, p: int, va: int) -> None:
        """P x V of head hh of the group over query rows [r0, r0 + tq), dequantized and stored
        into its column block."""
        h = h0 + hh
        kv0, kvg = kv_heads_of(h0, g)
        acc = lw.alloc(Buffer.ACC, tq * dv)
        lw.emit("attn_pv", "pv", out_addr=acc, p_addr=p, v_addr=va + (h // share - kv0) * dv,
                lq=tq, lk=lk, d=dv, v_stride=kvg * dv, **masks_of(b, h))
        lw.free(Buffer.ABUF, p)
        r = lw.alloc(Buffer.VBUF, tq * dv)
        lw.emit("dequant", "sfu", dst_addr=r, src_addr=acc, rows=tq, cols=dv, scale_addr=o_addr)
        lw.free(Buffer.ACC, acc)
        if rows is not None:
            lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=r, src_addr=r, rows=tq,
                    cols=dv, map_addr=rows.reuse_map + 2 * lq * b)
        lw.write_tile(op.result, r, b * lq + r0, tq, h * dv, dv)
        lw.free(Buffer.VBUF, r)

    def scores_to_p(b: int, h: int, scores: int, r0: int, tq: int) -> int:
        """DEQUANT, [per-query mask], SOFTMAX and QUANT of query rows [r0, r0 + tq) of head h:
        the ABUF address of P."""
        f = lw.alloc(Buffer.VBUF, tq * lk)
        lw.emit("dequant", "sfu", dst_addr=f, src_addr=scores, rows=tq, cols=lk, scale_addr=s_addr)
        lw.free(Buffer.ACC, scores)
        extra = ({} if spa is None else
                 {"has_elem_mask": 1, "elem_mask_addr": masks_of(b, h)["mask_addr"]})
        if mask_rows.per_query:
            mask_rows.add_fresh_block(b, h, f, r0, tq)
        elif mask_rows.present:
            extra.update(has_add_mask=1, add_mask_addr=mask_rows.row(b, h))
        # Causal: key c is visible to query row r0 + r when c <= r + r0 + lk - lq.
        causal_fields = {"causal": int(causal), "causal_offset": lk - lq + r0 if causal else 0}
        lw.emit("softmax", "sfu", dst_addr=f, src_addr=f, rows=tq, cols=lk, scale=1.0,
                **causal_fields, **extra)
        p = lw.alloc(Buffer.ABUF, tq * lk)
        lw.emit("quant", "sfu", dst_addr=p, src_addr=f, rows=tq, cols=lk, mult=float(p_mult))
        lw.free(Buffer.VBUF, f)
        return p

    q_tiles = [(r0, min(q_tile, lq - r0)) for r0 in range(0, lq, q_tile)]
    for b in range(batch):
        for h0 in range(0, heads, group):
            g = min(group, heads - h0)
            kv0, kvg = kv_heads_of(h0, g)
            for r0, tq in q_tiles:
                # K / V stay on chip across the query tiles; the first tile loads them with Q.
                qa = lw.alloc(Buffer.ABUF, tq * g * d)
                q_load = (q, r0, tq, lq, d, qa, q_mult, h0, g)
                if r0 == 0:
                    ka = lw.alloc(Buffer.ABUF, lk * kvg * d)
                    va = lw.alloc(Buffer.ABUF, lk * kvg * dv)
                    loads = _first_tile_loads(op, q_load, (k, 0, lk, lk, d, ka, k_mult, kv0, kvg),
                                              (v, 0, lk, lk, dv, va, v_mult, kv0, kvg))
                else:
                    loads = [q_load]
                _quantize_loads(lw, b, loads)
                pending: list[tuple[int, int]] = []  # (head in group, P address) waiting for P x V
                for hh in range(g):
                    h = h0 + hh
                    scores = lw.alloc(Buffer.ACC, tq * lk)
                    lw.emit("attn_qk", "qk", scores_addr=scores, q_addr=qa + hh * d,
                            k_addr=ka + (h // share - kv0) * d, lq=tq, lk=lk, d=d, q_stride=g * d,
                            k_stride=kvg * d, **masks_of(b, h))
                    pending.append((hh, scores_to_p(b, h, scores, r0, tq)))
                    if len(pending) == 2:
                        pv(b, h0, g, r0, tq, *pending.pop(0), va)
                for hh, p in pending:
                    pv(b, h0, g, r0, tq, hh, p, va)
                if r0 + tq == lq:
                    lw.free(Buffer.ABUF, qa, ka, va)
                else:
                    lw.free(Buffer.ABUF, qa)
    # Release order picks the next VBUF regions: each form keeps the order it always had.
    if op.is_masked:
        mask_rows.free()
        lw.free(Buffer.VBUF, s_addr, o_addr)
    else:
        lw.free(Buffer.VBUF, s_addr, o_addr)
        mask_rows.free()
    done_with(lw, op, *(t for t in (rows, spa) if t is not None))


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
    if spa is not None and spa.spa is None:
        raise fail(op, "its SPA mask is not on chip")
    return rows, spa


def _first_tile_loads(op: transformer.AttentionOp, q_load: tuple, k_load: tuple,
                      v_load: tuple) -> list[tuple]:
    """The Q, K, V loads of a head group's first query tile, in issue order."""
    if op.is_masked:
        # Q last: the sparse lowering produces it after K and V (beside the prediction), so
        # the in-order load queue fetches K and V while Q's last GEMMs still run.
        return [k_load, v_load, q_load]
    return [q_load, k_load, v_load]


def _quantize_loads(lw: Lowering, b: int, loads: list[tuple]) -> None:
    """LOAD + QUANT each (source, first row, rows, rows per batch element, head width, ABUF
    address, multiplier, first head, heads) column block of batch element b."""
    for src, row0, count_rows, length, cols, addr, mult, first, count in loads:
        lw.quantize_rows(src, b * length + row0, count_rows, first * cols, count * cols, addr,
                         ((0, count * cols, float(mult)),))


def _attention_tiling(lw: Lowering, op: transformer.AttentionOp, lq: int, lk: int, d: int,
                      dv: int) -> tuple[int, int]:
    """(query rows per tile, heads per group). All lq rows when one head's Q, K, V, P and its
    [lq, lk] scores fit; else dense attention takes query tiles of whole key rows (each row's
    softmax still sees all its keys: no recomputation, K / V stay on chip across the tiles)."""
    abuf, vbuf, acc = (lw.capacity(Buffer.ABUF), lw.capacity(Buffer.VBUF) // OUT_FRACTION,
                       lw.capacity(Buffer.ACC) // HALF)

    def fits(tq: int) -> bool:
        return (tq + lk) * d + lk * dv + 2 * tq * lk <= abuf and tq * lk <= min(vbuf, acc)

    if fits(lq):
        tq = lq
    else:
        limit = min((abuf - lk * (d + dv)) // (d + 2 * lk), vbuf // lk, acc // lk)
        if op.is_masked or limit < 1:
            why = ("masked attention is not tiled over query rows" if op.is_masked else
                   "not even one query row over all keys fits")
            raise CompileError(f"{op_label(op)}: attention over {lq}x{lk} does not fit the "
                               f"on-chip buffers ({why})")
        tq = round_tile(limit, lq, lw.config.mac_rows)
        assert fits(tq)
    per_head = (tq + lk) * d + lk * dv
    return tq, max(1, min(op.heads, abuf // HALF // per_head))
