"""Which token rows a host region reads of an activation, and rereading them from a narrowed
copy (for `esact-dead-rows`, passes/dead_rows.py).

A host region reads only some rows of its argument x [B, L, D] when every use of it is
- `onnx.Gather` of x on axis 1 with constant indices (a classifier's token 0, the pooler's
  [CLS]), or
- `onnx.Slice` of x whose axis-1 range is constant with step 1 (`x[:, a:b]`).
Once x is narrowed to some rows `held` (increasing), each read is rewritten to the positions its
rows have there; a step-1 range of rows stays a step-1 range of positions, as every held row
between two of its rows is one of its rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, DenseIntOrFPElementsAttr
from xdsl.ir import BlockArgument, Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc.dialects.onnx import OP_CLASSES, OnnxOperation

TOKEN_AXIS = 1
RANK = 3
SLICE_INPUTS = ("data", "starts", "ends", "axes", "steps")


def rows_read(arg: BlockArgument, length: int) -> frozenset[int] | None:
    """The rows of `arg` (L = `length`) its region reads; None: all of them (or unknown)."""
    rows: set[int] = set()
    for use in arg.uses:
        read = _read_rows(use.operation, use.index, length)
        if read is None:
            return None
        rows.update(read)
    return frozenset(rows)


def reread_narrowed(arg: BlockArgument, held: Sequence[int], length: int) -> None:
    """Rewrite every read of `arg` (now holding original rows `held` of `length`) to the
    positions of its rows in `held`."""
    for use in list(arg.uses):
        op = use.operation
        assert isinstance(op, OnnxOperation)
        rows = _read_rows(op, use.index, length)
        assert rows is not None, "rows_read accepted every read"
        positions = [held.index(r) for r in rows]
        if op.op_type == "Gather":
            _set_constant(op, 1, positions)
        else:
            starts, ends, axis = _slice_constants(op)
            starts[axis], ends[axis] = positions[0], positions[-1] + 1
            _set_constant(op, _position_of(op, "starts"), list(starts))
            _set_constant(op, _position_of(op, "ends"), list(ends))


def _read_rows(op: Operation, index: int, length: int) -> list[int] | None:
    if not isinstance(op, OnnxOperation) or index != 0:
        return None
    if op.op_type == "Gather":
        return _gather_rows(op, length)
    if op.op_type == "Slice":
        return _slice_rows(op, length)
    return None


def _gather_rows(op: OnnxOperation, length: int) -> list[int] | None:
    axis = op.attributes.get("axis")
    if axis is None or axis.value.data % RANK != TOKEN_AXIS:  # type: ignore[attr-defined]
        return None
    values = _constant_ints(op.operands[1])
    if values is None or values.size == 0 or np.any(values < -length) or np.any(values >= length):
        return None
    return [int(v) % length for v in values.reshape(-1)]


def _slice_rows(op: OnnxOperation, length: int) -> list[int] | None:
    found = _slice_constants(op)
    if found is None:
        return None
    starts, ends, axis = found
    start, end = (min(max(v + length if v < 0 else v, 0), length) for v in (starts[axis], ends[axis]))
    return list(range(start, end)) or None


def _slice_constants(op: OnnxOperation) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(starts, ends, the entry of the token axis) of a Slice whose axis-1 range is constant
    with step 1; None otherwise."""
    values = {}
    for name in SLICE_INPUTS[1:]:
        position = _position_of(op, name)
        values[name] = None if position is None else _constant_ints(op.operands[position])
    starts, ends = values["starts"], values["ends"]
    if starts is None or ends is None or starts.shape != ends.shape or starts.ndim != 1:
        return None
    axes = values["axes"] if _position_of(op, "axes") is not None else np.arange(starts.size)
    if axes is None or axes.shape != starts.shape:
        return None
    matches = [k for k, a in enumerate(axes) if int(a) % RANK == TOKEN_AXIS]
    if len(matches) != 1:
        return None
    steps = values["steps"] if _position_of(op, "steps") is not None else np.ones_like(starts)
    if steps is None or steps.shape != starts.shape or int(steps[matches[0]]) != 1:
        return None
    return starts.copy(), ends.copy(), matches[0]


def _position_of(op: OnnxOperation, name: str) -> int | None:
    """The operand index of the ONNX input `name` of a Slice (None: absent)."""
    onnx_position = SLICE_INPUTS.index(name)
    recorded = op.attributes.get("onnx_input_positions")
    positions = (list(recorded.get_values()) if isinstance(recorded, DenseArrayBase)
                 else list(range(len(op.operands))))
    return positions.index(onnx_position) if onnx_position in positions else None


def _constant_ints(value: SSAValue) -> np.ndarray | None:
    owner = value.owner
    if not (isinstance(owner, OnnxOperation) and owner.op_type == "Constant"):
        return None
    attr = owner.attributes["value"]
    assert isinstance(attr, DenseIntOrFPElementsAttr)
    values = np.asarray(attr.get_values())
    return values if np.issubdtype(values.dtype, np.integer) else None


def _set_constant(op: OnnxOperation, index: int, values: list[int]) -> None:
    """Give `op` a new constant operand `index` of the old one's type holding `values` (the old
    one is erased when nothing else reads it)."""
    old = op.operands[index].owner
    assert isinstance(old, OnnxOperation)
    attr = old.attributes["value"]
    assert isinstance(attr, DenseIntOrFPElementsAttr)
    new = OP_CLASSES["Constant"].create(
        result_types=[attr.type],
        attributes={"value": DenseIntOrFPElementsAttr.from_list(attr.type, [int(v) for v in values])})
    new.location = old.location
    Rewriter.insert_op(new, InsertPoint.before(op))
    op.operands[index] = new.results[0]
    if not old.results[0].uses:
        Rewriter.erase_op(old)
