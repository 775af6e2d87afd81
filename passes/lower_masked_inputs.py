"""Masks for the INT8 linear and attention lowerings (`passes/lower_linear.py`,
`passes/lower_attention.py`), whatever produced them.

Masks are read from MBUF (`mask_tiles`): the regions an SPLS prediction chain left there
(`passes/lower_spls_to_esact.py` registers them in `Lowering.masks`), or a constant of the
weight store (a test-defined scheme), which is converted once to the hardware's mask formats
(row mask bytes, int16 reuse map, key / SPA bytes, one copy per batch element) and LOADed. The
regions are freed after the last op reading them. `MaskRows`: additive attention masks
(padding, causal, per query) as VBUF rows.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation, SSAValue

from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.ir_queries import op_label
from esact_cc.passes.lowering_state import (
    F32,
    Lowering,
    MaskTiles,
    is_dense_int8_linear,
    shape_of,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer


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
                                    and u.operation.is_quantized and u.index == 0
                                    and u.operation.token_scales is None
                                    and u.operation.group_scales is None) for u in uses):
                continue  # (input groups: `plan_activation_formats` planned their format)
            scales = {float(u.operation.input_scale.value.data) for u in uses}  # type: ignore[attr-defined]
            if len(scales) == 1 and value not in lw.tensors and value not in lw.int8_tensors:
                lw.int8_scale[value] = scales.pop()
                if not any(is_dense_int8_linear(u.operation) for u in uses):
                    lw.fp32_needed.discard(value)
    lw.fp32_needed.update(ops[-1].operands if ops else ())


def reused_rows_unread(value: SSAValue, rows: SSAValue) -> bool:
    """Whether every reader of `value` reads only the rows the reuse map `rows` computes: a
    linear masked by `rows` whose input it is, or an attention masked by `rows` whose Q it is
    (reused rows are skipped by their GEMMs). Then the reused rows of `value` need no
    SCATTER_ROWS: nothing reads them (they hold whatever the buffer held)."""
    def kept_only(user: Operation) -> bool:
        if isinstance(user, transformer.LinearOp):
            return user.rows is rows and user.x is value and value not in user.operands[1:]
        if isinstance(user, transformer.AttentionOp):
            return (user.rows is rows and user.q is value
                    and value not in (o for o in user.operands if o is not user.q))
        return False

    users = [use.operation for use in value.uses]
    return bool(users) and all(kept_only(user) for user in users)


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

    @property
    def shared_by_heads(self) -> bool:
        """A per-query mask whose [Lq, Lk] block is the same for every head."""
        return self.per_query and not self.per_head

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

    def add_fresh_block(self, b: int, h: int, dst: int, r0: int, rows: int,
                        component: str = "sfu", kept: dict[str, int] | None = None) -> None:
        """ADD rows [r0, r0 + rows) of the [Lq, Lk] block of a per-query mask to the scores at
        `dst`, loaded for this head and query tile alone (the attention streams it); `kept`:
        the row-mask fields of the rows the ADD runs on (default all)."""
        lk = self.shape[3]
        mm = self.fresh_rows(b, h, r0, rows)
        self.lw.emit("add", component, dst_addr=dst, a_addr=dst, b_addr=mm, rows=rows, cols=lk,
                     **(kept or {}))
        self.lw.free(Buffer.VBUF, mm)

    def fresh_rows(self, b: int, h: int, r0: int, rows: int, into: int | None = None) -> int:
        """VBUF address of rows [r0, r0 + rows) of a per-query mask's [Lq, Lk] block, LOADed
        for one query tile (the caller frees it, or holds `into`): long sequences, whose block
        does not fit."""
        lq, lk = self.shape[2], self.shape[3]
        assert self.tensor is not None and self.per_query
        mm = self.lw.alloc(Buffer.VBUF, rows * lk) if into is None else into
        base = (((b % self.shape[0]) * self.shape[1] + h % self.shape[1]) * lq + r0) * lk
        self.lw.load(Buffer.VBUF, mm, self.tensor.address + base * F32, rows, lk)
        return mm

    def free(self) -> None:
        self.lw.free(Buffer.VBUF, *self.rows.values())
