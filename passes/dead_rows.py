"""`esact-dead-rows`: compute only the token rows some output reads.


A classifier reads token 0 of its last layer (ViT: final norm -> host `Gather axis=1 index 0`
-> head; BERT's pooler likewise), yet every op of that layer runs over all L rows. This pass
finds, per activation [B, L, D] (token axis 1), the rows that are read, walking back from the
outputs:
- a function result reads every row; a host region reads the rows its axis-1 `Gather` /
  `Slice` ops of constant indices take when those are all it does with the value, else every
  row (passes/host_row_reads.py);
- row-wise ops (`ROW_WISE`: an unmasked linear's x, norms, activations, add, mul) read of each
  token operand the rows their result needs;
- an attention reads the needed rows of Q (when no mask or causal rule depends on the query
  position, see `_query_rows_free`) and every row of K and V (all keys stay needed);
- anything else reads every row.
Then every row-wise op or attention whose result needs fewer rows than it has is restricted:
its token operands are narrowed by `transformer.select_rows` (inserted once per value and row
set, where the narrowing starts), its result retyped; a host Gather / Slice reads the narrowed
value at the remapped positions. On the digits ViT the last layer's Q, attention rows, O, LN2, FFN and
the final norm run on 1 row of 17 (K and V, which every query reads, on all 17).

The removed rows are read by nothing, so outputs are bit-identical. It runs after `quantize`
(the calibrated ranges cover every row, as before). `dead_rows_line` says what was removed.
docs/design.md section 3.2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DYNAMIC_INDEX, ModuleOp, TensorType
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc.dialects import transformer
from esact_cc.dialects.select_rows_op import SelectRowsOp, select_rows_type
from esact_cc.passes.host_row_reads import reread_narrowed, rows_read
from esact_cc.passes.layer_roles import LAYER_ATTR, Stamp, read_stamp, stamp

ROW_WISE = (transformer.LinearOp, transformer.NormOp, transformer.GeluOp, transformer.SiluOp,
            transformer.ReluOp, transformer.SoftmaxOp, transformer.AddOp, transformer.MulOp)
"""Ops whose result row i depends on row i of their token operands only."""

Rows = frozenset[int]


def token_rows(value: SSAValue) -> int | None:
    """L of an activation [B, L, D] with a static L, else None (never narrowed)."""
    typ = value.type
    if not isinstance(typ, TensorType) or len(typ.get_shape()) != 3:
        return None
    length = typ.get_shape()[1]
    return None if length == DYNAMIC_INDEX else length


def _token_operands(op: Operation) -> list[int]:
    """Indices of the operands `op` reads row by row (empty: not restrictable)."""
    if isinstance(op, transformer.LinearOp):
        return [] if op.is_masked else [0]
    if isinstance(op, ROW_WISE):
        return [i for i, v in enumerate(op.operands) if token_rows(v) is not None]
    if isinstance(op, transformer.AttentionOp):
        return [0]
    return []


def _query_rows_free(op: transformer.AttentionOp, rows: Rows, length: int) -> bool:
    """Whether the attention can compute only query `rows`: unmasked by a scheme, an additive
    mask without a query axis, and for causal attention a suffix of the rows (its rule puts
    the Lq queries last). Position terms (DeBERTa) index by query row: every row."""
    if op.is_masked or op.has_positions:
        return False
    if op.mask is not None:
        dims = op.mask.type.get_shape()  # type: ignore[attr-defined]
        if len(dims) >= 2 and dims[-2] != 1:
            return False
    return op.causal is None or rows == frozenset(range(length - len(rows), length))


def needed_rows(block: Block) -> dict[SSAValue, Rows]:
    """Rows of each activation some use reads (absent: all of them); walks back from the
    block's end, so a value's uses are settled before its producer is reached."""
    needed: dict[SSAValue, set[int]] = {}
    everything: set[SSAValue] = set()
    for op in reversed(list(block.ops)):
        restrictable = set(_token_operands(op))
        for i, value in enumerate(op.operands):
            length = token_rows(value)
            if length is None or value in everything:
                continue
            rows = _rows_read(op, i, length, restrictable, needed)
            if rows is None:
                everything.add(value)
                needed.pop(value, None)
            else:
                needed.setdefault(value, set()).update(rows)
    return {v: frozenset(r) for v, r in needed.items() if len(r) < token_rows(v)}  # type: ignore[operator]


def _rows_read(op: Operation, index: int, length: int, restrictable: set[int],
               needed: dict[SSAValue, set[int]]) -> Iterable[int] | None:
    """Rows `op` reads of its operand `index` (None: all)."""
    if isinstance(op, transformer.HostOp):
        return rows_read(op.body.block.args[index], length)
    if index not in restrictable or token_rows(op.results[0]) != length:
        return None
    rows = needed.get(op.results[0])
    return rows if rows is not None and _can_narrow(op, frozenset(rows), length) else None


def _can_narrow(op: Operation, rows: Rows, length: int) -> bool:
    """Whether `op` (row-wise or attention) may compute only `rows` of its result."""
    if not rows or not _token_operands(op):
        return False
    return not isinstance(op, transformer.AttentionOp) or _query_rows_free(op, rows, length)


@dataclass
class _Narrowing:
    """The rewrite of one block: each narrowed value -> the original rows it holds."""

    held: dict[SSAValue, tuple[int, ...]]
    length: dict[SSAValue, int]
    """Each narrowed value -> L, the row count of the value it stands for."""
    made: dict[tuple[SSAValue, tuple[int, ...]], SSAValue]

    def rows_of(self, value: SSAValue, rows: tuple[int, ...], before: Operation) -> SSAValue:
        """`value` narrowed to original `rows` (a select_rows before `before` if needed)."""
        holds = self.held.get(value)
        if holds == rows:
            return value
        key = (value, rows)
        if key not in self.made:
            positions = rows if holds is None else tuple(holds.index(r) for r in rows)
            select = SelectRowsOp(value, positions)
            where = read_stamp(before)
            if where is not None:  # the layer of the op that reads it
                stamp(select, Stamp(where.layer, "select_rows"))
            select.location = before.location  # the binary's debug map names the reader
            Rewriter.insert_op(select, InsertPoint.before(before))
            self.made[key] = select.result
            self.held[select.result] = rows
            self.length[select.result] = self.length.get(value) or token_rows(value) or 0
        return self.made[key]


def eliminate_dead_rows(block: Block) -> int:
    """Restrict the ops of `block` to the rows read; returns how many ops were restricted."""
    needed = needed_rows(block)
    narrowing = _Narrowing({}, {}, {})
    restricted = 0
    for op in list(block.ops):
        if isinstance(op, transformer.HostOp):
            _narrow_host_inputs(op, narrowing)
            continue
        result = op.results[0] if op.results else None
        if result is None or result not in needed:
            continue
        length = token_rows(result)
        if length is None or not _can_narrow(op, needed[result], length):
            continue
        rows = tuple(sorted(needed[result]))
        for i in _token_operands(op):
            op.operands[i] = narrowing.rows_of(op.operands[i], rows, op)
        narrowed = Rewriter.replace_value_with_new_type(result, select_rows_type(result.type, len(rows)))
        narrowing.held[narrowed] = rows
        narrowing.length[narrowed] = length
        restricted += 1
    return restricted


def _narrow_host_inputs(op: transformer.HostOp, narrowing: _Narrowing) -> None:
    """A host region reading a narrowed value takes it as is and reads its rows at the
    positions they have there."""
    for i, value in enumerate(op.inputs):
        holds = narrowing.held.get(value)
        if holds is not None:
            arg = Rewriter.replace_value_with_new_type(op.body.block.args[i], value.type)
            reread_narrowed(arg, holds, narrowing.length[value])  # type: ignore[arg-type]


def narrowed_query_note(op: transformer.AttentionOp) -> str | None:
    """For a sparsity scheme skipping an attention this pass narrowed to fewer query rows
    than keys: why (its one line on stderr); None for any other attention."""
    value, hops = op.q, 0
    while not isinstance(value.owner, SelectRowsOp) and hops < 3:  # q <- linear <- select
        owner = value.owner
        if not isinstance(owner, Operation) or not owner.operands:
            return None
        value, hops = owner.operands[0], hops + 1
    if not isinstance(value.owner, SelectRowsOp) or token_rows(op.q) == token_rows(op.k):
        return None
    return (f"computes {token_rows(op.q)} of {token_rows(op.k)} query rows (esact-dead-rows; "
            "--no-dead-rows keeps them all): nothing to predict")


def dead_rows_line(module: ModuleOp) -> str | None:
    """One line of what the pass removed, from the select_rows ops it left; None if none."""
    groups: dict[tuple[int, int, int], int] = {}
    for op in module.walk():
        if isinstance(op, SelectRowsOp):
            layer = op.attributes.get(LAYER_ATTR)
            key = (-1 if layer is None else layer.value.data,  # type: ignore[attr-defined]
                   token_rows(op.x) or 0, len(op.kept))
            groups[key] = groups.get(key, 0) + 1
    if not groups:
        return None
    parts = [f"{kept} of {length} token rows computed "
             f"{'after the last layer' if layer < 0 else f'from layer {layer} on'} "
             f"({count} select_rows)"
             for (layer, length, kept), count in sorted(groups.items())]
    return "dead rows (esact-dead-rows; --no-dead-rows keeps them): " + "; ".join(parts)


@dataclass(frozen=True)
class DeadRowsPass(ModulePass):
    """Restrict row-wise ops and attention queries to the token rows an output reads."""

    name = "esact-dead-rows"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for function in [f for f in op.walk() if isinstance(f, func.FuncOp)]:
            if function.body.blocks:
                eliminate_dead_rows(function.body.block)
