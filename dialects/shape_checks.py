"""Shape and attribute checks shared by the verifiers of every project dialect (`transformer`,
`spls`, `sanger`, `spatten`).

Dynamic dimensions (DYNAMIC_INDEX) agree with any size; every message names the op and the
operand or property at fault, in the `<op>: <what> ...` form the lit tests check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from io import StringIO

from xdsl.dialects.builtin import DYNAMIC_INDEX, FloatAttr, IntegerType, TensorType
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException


def shape(value: SSAValue | Attribute) -> tuple[int, ...]:
    """The shape of a tensor value's type (dynamic dims are DYNAMIC_INDEX)."""
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


def element(value: SSAValue) -> Attribute:
    typ = value.type
    assert isinstance(typ, TensorType)
    return typ.element_type


def dims_agree(a: int, b: int) -> bool:
    """Two dimensions agree unless both are static and different."""
    return a == DYNAMIC_INDEX or b == DYNAMIC_INDEX or a == b


def shapes_agree(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(dims_agree(x, y) for x, y in zip(a, b))


def fmt(dims: Sequence[int]) -> str:
    return "x".join("?" if d == DYNAMIC_INDEX else str(d) for d in dims) or "scalar"


def types_text(types: Sequence[Attribute]) -> str:
    """Types as IR text: `(tensor<1x8xf32>, tensor<8xf32>)`."""
    stream = StringIO()
    printer = Printer(stream=stream)
    printer.print_list(types, printer.print_attribute)
    return f"({stream.getvalue()})"


def require_rank(op_name: str, what: str, dims: Sequence[int], ranks: Sequence[int]) -> None:
    if len(dims) not in ranks:
        if isinstance(ranks, range) and ranks.stop > ranks.start + 1:
            expected = f"rank >= {ranks.start}"
        else:
            expected = "rank " + " or ".join(str(r) for r in ranks)
        raise VerifyException(f"{op_name}: {what} must have {expected}, got {fmt(dims)}")


def require_positive(op: Operation, what: str, attr: FloatAttr) -> None:
    """A float property must be finite and > 0 (scales, epsilon)."""
    value = attr.value.data
    if not (math.isfinite(value) and value > 0):
        raise VerifyException(f"{op.name}: {what} must be finite and positive, got {value}")


def require_positives(op: Operation, *names: str) -> None:
    """Each named float property of `op` is finite and > 0."""
    for name in names:
        require_positive(op, name, getattr(op, name))


def require_heads(op: Operation, heads: int, **widths: int) -> None:
    """`heads` (> 0) divides every named width: `require_heads(op, h, N=16)`."""
    if heads <= 0 or any(width % heads for width in widths.values()):
        named = " and ".join(f"{name} = {width}" for name, width in widths.items())
        raise VerifyException(f"{op.name}: num_heads {heads} does not divide {named}")


def require_broadcast(op: Operation, what: str, value: SSAValue, target: Sequence[int]) -> None:
    """value's shape broadcasts to `target` (numpy rules, rank at most target's)."""
    got = shape(value)
    if len(got) > len(target) or any(d not in (1, t) for d, t in zip(reversed(got),
                                                                    reversed(target))):
        raise VerifyException(f"{op.name}: {what} {fmt(got)} does not broadcast to {fmt(target)}")


def require(op: Operation, what: str, value: SSAValue, dims: Sequence[int],
            elem: Attribute | None = None) -> None:
    """value must have exactly `dims` (and element type `elem` if given)."""
    got = shape(value)
    if got != tuple(dims):
        raise VerifyException(f"{op.name}: {what} must be {fmt(dims)}, got {fmt(got)}")
    if elem is not None and element(value) != elem:
        raise VerifyException(f"{op.name}: {what} must have element type {elem}, "
                              f"got {element(value)}")


def require_mask(op: Operation, what: str, value: SSAValue, dims: Sequence[int],
                 integer_widths: Sequence[int]) -> None:
    """A mask operand: `dims`, or `dims` without its leading batch dim (one mask for every
    batch element: a constant from the weight store), with an integer element type of one of
    `integer_widths` bits."""
    got = shape(value)
    if not (shapes_agree(got, dims) or shapes_agree(got, dims[1:])):
        raise VerifyException(f"{op.name}: {what} must be {fmt(dims)} or {fmt(dims[1:])}, "
                              f"got {fmt(got)}")
    el = element(value)
    if not (isinstance(el, IntegerType) and el.width.data in integer_widths):
        widths = ", ".join(f"i{w}" for w in integer_widths)
        raise VerifyException(f"{op.name}: {what} must have element type {widths}, got {el}")
