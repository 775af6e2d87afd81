"""The view of an `onnx` dialect function that `lift-transformer`'s patterns match against.

Patterns walk producers and users of SSA values, read ONNX attributes and constant values, and
fail with `NoMatch("<which check failed>")`; `OnnxGraph` bundles those queries, plus the weight
store (constants that are `onnx.weight` handles are read from it, and transposed or sliced
weights are added to it under new names).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from esact_cc.dialects.onnx import OP_CLASSES, OnnxOperation, WeightOp
from xdsl.dialects.builtin import DYNAMIC_INDEX, NameLoc, NoneAttr, StringAttr, TensorType
from xdsl.ir import Operation, OpResult, SSAValue

from esact_cc.frontend.onnx_attributes import onnx_attrs_of
from esact_cc.tensor_types import numpy_from_dense_attr, tensor_type_of
from esact_cc.weight_store import WeightStore

INPUT_POSITIONS_ATTR = "onnx_input_positions"
"""The importer's record of which ONNX input positions an op's operands fill."""


class NoMatch(Exception):
    """A candidate failed one structural or constant check; the message names the check."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise NoMatch(message)


def shape_of(value: SSAValue) -> tuple[int, ...]:
    typ = value.type
    # Messages are formatted only on failure: printing a type costs more than the check.
    if not isinstance(typ, TensorType):
        raise NoMatch(f"value of type {typ} is not a tensor")
    shape = tuple(typ.get_shape())
    require(DYNAMIC_INDEX not in shape, f"shape {shape} is not static")
    return shape


def is_unused(op: Operation) -> bool:
    """No result of `op` has a use (O(results); `uses.get_length()` walks every use)."""
    return all(result.first_use is None for result in op.results)


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def location_name(op: Operation) -> str:
    """The ONNX node name an op carries as its location (or its op name)."""
    loc = op.location
    if isinstance(loc, NameLoc):
        return loc.desc.data
    return op.name


def close(value: float, expected: float, rel: float = 1e-5) -> bool:
    return math.isclose(value, expected, rel_tol=rel, abs_tol=0.0)


class OnnxGraph:
    """Queries on one function's `onnx` ops, and the weight store behind its handles."""

    def __init__(self, store: WeightStore):
        self.store = store
        self._derived: dict[str, str] = {}
        """Hint -> store name of the tensors this pass added (see `new_weight`)."""

    # --- structure --------------------------------------------------------------------
    @staticmethod
    def producer(value: SSAValue, *op_types: str) -> OnnxOperation | None:
        """The `onnx.<T>` op defining `value` if T is one of `op_types` (any T if none given)."""
        if not isinstance(value, OpResult):
            return None
        op = value.op
        if not isinstance(op, OnnxOperation):
            return None
        if op_types and op.op_type not in op_types:
            return None
        return op

    def expect(self, value: SSAValue, op_type: str, what: str) -> OnnxOperation:
        """The `onnx.<op_type>` producing `value`, else NoMatch naming `what`."""
        op = self.producer(value, op_type)
        if op is None:
            found = value.op.name if isinstance(value, OpResult) else "a function argument"
            raise NoMatch(f"{what} is produced by {found}, expected onnx.{op_type}")
        return op

    @staticmethod
    def single_use(value: SSAValue) -> bool:
        return value.has_one_use()

    def require_single_use(self, value: SSAValue, what: str) -> None:
        if not value.has_one_use():  # counting uses walks them all: only for the message
            count = value.uses.get_length()
            raise NoMatch(f"{what} has {count} uses, expected 1 (it is needed elsewhere)")

    @staticmethod
    def only_user(value: SSAValue, *op_types: str) -> OnnxOperation | None:
        """The single user of `value` if it is an `onnx.<T>` with T in `op_types`."""
        user = value.get_user_of_unique_use()
        if not isinstance(user, OnnxOperation) or (op_types and user.op_type not in op_types):
            return None
        return user

    @staticmethod
    def inputs(op: Operation) -> list[SSAValue | None]:
        """The op's operands by ONNX input position (None where an optional input is absent)."""
        positions_attr = op.attributes.get(INPUT_POSITIONS_ATTR)
        if positions_attr is None:
            return list(op.operands)
        positions = [int(p) for p in positions_attr.get_values()]  # type: ignore[attr-defined]
        result: list[SSAValue | None] = [None] * (max(positions) + 1 if positions else 0)
        for position, operand in zip(positions, op.operands, strict=True):
            result[position] = operand
        return result

    def input(self, op: Operation, position: int) -> SSAValue | None:
        values = self.inputs(op)
        return values[position] if position < len(values) else None

    @staticmethod
    def attrs(op: Operation) -> dict[str, Any]:
        return onnx_attrs_of(op)

    # --- constants --------------------------------------------------------------------
    def const(self, value: SSAValue | None) -> np.ndarray | None:
        """The value of a compile-time constant (inline Constant, weight handle, Identity of
        one), else None. The frontend folds every constant subgraph, so this is complete."""
        while value is not None:
            if not isinstance(value, OpResult):
                return None
            op = value.op
            if isinstance(op, WeightOp):
                return self.store[op.weight_name.data]
            if isinstance(op, OnnxOperation) and op.op_type == "Constant":
                return numpy_from_dense_attr(op.attributes["value"])  # type: ignore[arg-type]
            if isinstance(op, OnnxOperation) and op.op_type == "Identity":
                value = op.operands[0]
                continue
            return None
        return None

    def is_const(self, value: SSAValue) -> bool:
        if not isinstance(value, OpResult):
            return False
        op = value.op
        if isinstance(op, WeightOp):
            return True
        if isinstance(op, OnnxOperation) and op.op_type == "Constant":
            return True
        if isinstance(op, OnnxOperation) and op.op_type == "Identity":
            return self.is_const(op.operands[0])
        return False

    def scalar(self, value: SSAValue, what: str) -> float:
        """A constant with one element, as a float, else NoMatch naming `what`."""
        array = self.const(value)
        require(array is not None, f"{what} is not a constant")
        assert array is not None
        require(array.size == 1, f"{what} has shape {fmt_shape(array.shape)}, expected a scalar")
        return float(array.reshape(-1)[0])

    def split_const(self, op: Operation, what: str) -> tuple[SSAValue, float]:
        """For a binary op with exactly one scalar-constant operand: (the other operand, the
        scalar); else NoMatch."""
        a, b = op.operands[0], op.operands[1]
        a_const, b_const = self.is_const(a), self.is_const(b)
        require(
            a_const != b_const, f"{what} ({location_name(op)}) needs exactly one constant operand"
        )
        if b_const:
            return a, self.scalar(b, f"{what} constant")
        return b, self.scalar(a, f"{what} constant")

    # --- weight handles ---------------------------------------------------------------
    def weight_handle(
        self, value: SSAValue, array: np.ndarray, hint: str, before: Operation
    ) -> SSAValue:
        """An `onnx.weight` handle holding `array`: `value`'s own handle when it already holds
        exactly that tensor, else a new store entry (named from `hint`) and handle."""
        source = value
        while isinstance(source, OpResult) and isinstance(source.op, OnnxOperation):
            if source.op.op_type != "Identity":
                break
            source = source.op.operands[0]
        if isinstance(source, OpResult) and isinstance(source.op, WeightOp):
            stored = self.store[source.op.weight_name.data]
            if (
                stored.shape == array.shape
                and stored.dtype == array.dtype
                and (stored is array or np.array_equal(stored, array))
            ):
                return source
        return self.new_weight(array, hint, before)

    def new_weight(self, array: np.ndarray, hint: str, before: Operation) -> SSAValue:
        """A handle to `array` stored under a name derived from `hint`: a tensor this pass
        already derived under that hint with equal contents is reused (a transposed weight
        shared by two MatMuls is stored once), else a fresh store entry is made."""
        name = self._derived.get(hint)
        if name is None or not np.array_equal(self.store[name], array):
            name = self.store.unique_name(hint)
            self.store.add(name, np.ascontiguousarray(array))
            self._derived[hint] = name
        op = WeightOp(name, tensor_type_of(self.store[name]))
        op.location = NameLoc(StringAttr(name), NoneAttr())
        before.parent_block().insert_op_before(op, before)  # type: ignore[union-attr]
        return op.result

    @staticmethod
    def weight_name(value: SSAValue) -> str | None:
        """The store name behind a (possibly Identity-wrapped) weight handle."""
        while isinstance(value, OpResult):
            if isinstance(value.op, WeightOp):
                return value.op.weight_name.data
            if isinstance(value.op, OnnxOperation) and value.op.op_type == "Identity":
                value = value.op.operands[0]
                continue
            return None
        return None

    @staticmethod
    def new_onnx_op(
        op_type: str,
        operands: Sequence[SSAValue],
        result_type: TensorType,
        attributes: dict,
        like: Operation,
    ) -> OnnxOperation:
        """A new `onnx.<op_type>` op located like `like` (inserted by the caller)."""
        op = OP_CLASSES[op_type](
            operands=[list(operands)], result_types=[[result_type]], attributes=attributes
        )
        op.location = like.location
        return op
