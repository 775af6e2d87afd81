"""How many elements a node's result would have, computed from its constant inputs before the
frontend folds (evaluates) it.

Shape inference cannot always size a result (a Tile whose repeats come out of a Mul), and
evaluating first would allocate whatever the model asks for. `result_elements` gives an upper
bound of the element count of the node's largest result from the input shapes and values
alone, with Python integers (no overflow). Ops that never produce more elements than their
largest input (unary ops, reshapes, slices, reductions, ...) are in `NON_GROWING`; every other
op the kernels implement has a predictor in `_PREDICTORS` (a test checks that each op is in
one of the two).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Inputs = Sequence[np.ndarray | None]

NON_GROWING = frozenset({
    "Abs", "ArgMax", "Cast", "Ceil", "Constant", "Cos", "CumSum", "Dropout", "Erf", "Exp",
    "Flatten", "Floor", "GatherElements", "Gelu", "Identity", "IsNaN", "Log", "Neg", "Not",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "ScatterND", "Shape", "Sigmoid", "Sign",
    "Sin", "Size", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Tanh", "Transpose", "Trilu",
    "Unsqueeze",
})
UNBOUNDED = math.inf
"""The bound for an input the predictor cannot read (the node is then not folded)."""


def _present(inputs: Inputs) -> list[np.ndarray]:
    return [np.asarray(x) for x in inputs if x is not None]


def _ints(value: np.ndarray | None) -> list[int]:
    return [] if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    """An upper bound of each dim of the broadcast of `shapes` (numpy rules)."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [[1] * (rank - len(s)) + [max(int(d), 0) for d in s] for s in shapes]
    return [max(column, default=1) for column in zip(*padded, strict=True)]


def _broadcasting(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return math.prod(_broadcast([x.shape for x in _present(inputs)]))


def _largest_input(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return max((x.size for x in _present(inputs)), default=0)


def _expand(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return math.prod(_broadcast([inputs[0].shape, _ints(inputs[1])]))


def _tile(inputs: Inputs, attrs: dict[str, Any]) -> float:
    # numpy's tile pads the shorter of shape and repeats with leading ones
    shape, reps = list(inputs[0].shape), _ints(inputs[1])
    rank = max(len(shape), len(reps))
    shape, reps = [1] * (rank - len(shape)) + shape, [1] * (rank - len(reps)) + reps
    return math.prod(d * max(r, 0) for d, r in zip(shape, reps, strict=True))


def _constant_of_shape(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return math.prod(max(d, 0) for d in _ints(inputs[0]))


def _range(inputs: Inputs, attrs: dict[str, Any]) -> float:
    start, limit, delta = (float(np.asarray(x).reshape(-1)[0]) for x in inputs[:3])
    if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
        return UNBOUNDED if delta != 0 else 0  # the kernel reports a zero step itself
    return max(0, math.ceil((limit - start) / delta))


def _pad(inputs: Inputs, attrs: dict[str, Any]) -> float:
    x = inputs[0]
    given = len(inputs) > 1 and inputs[1] is not None
    pads = _ints(inputs[1]) if given else list(attrs.get("pads", []))
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.ndim))
    dims = list(x.shape)
    half = len(pads) // 2
    for i, axis in enumerate(axes):
        dims[axis % x.ndim] += max(pads[i], 0) + max(pads[i + half], 0)
    return math.prod(dims)


def _matmul(inputs: Inputs, attrs: dict[str, Any]) -> float:
    a, b = inputs[0].shape, inputs[1].shape
    a, b = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
    return math.prod(_broadcast([a[:-2], b[:-2]])) * a[-2] * b[-1]


def _gemm(inputs: Inputs, attrs: dict[str, Any]) -> float:
    a, b = inputs[0].shape, inputs[1].shape
    rows = a[-1] if attrs.get("transA", 0) else a[0]
    cols = b[0] if attrs.get("transB", 0) else b[-1]
    bias = [inputs[2].shape] if len(inputs) > 2 and inputs[2] is not None else []
    shapes = [(rows, cols), *bias]
    return math.prod(_broadcast(shapes))


def _einsum(inputs: Inputs, attrs: dict[str, Any]) -> float:
    terms = str(attrs.get("equation", "")).replace(" ", "").split("->")[0].split(",")
    present = _present(inputs)
    if "..." in "".join(terms) or len(terms) != len(present):
        return math.prod(x.size for x in present)  # bounds any einsum of these inputs
    sizes: dict[str, int] = {}
    for term, x in zip(terms, present, strict=True):
        for label, size in zip(re.findall(r"[A-Za-z]", term), x.shape, strict=False):
            sizes[label] = max(sizes.get(label, 0), size)
    return math.prod(sizes.values())


def _conv(inputs: Inputs, attrs: dict[str, Any]) -> float:
    x, w = inputs[0].shape, inputs[1].shape
    channels = max(w[0], inputs[2].size if len(inputs) > 2 and inputs[2] is not None else 0)
    pads = list(attrs.get("pads", [0] * 2 * (len(x) - 2)))
    spatial = [d + sum(max(p, 0) for p in pads[i::len(x) - 2]) for i, d in enumerate(x[2:])]
    return x[0] * channels * math.prod(spatial)


def _gather(inputs: Inputs, attrs: dict[str, Any]) -> float:
    data, indices = inputs[0], inputs[1]
    axis = int(attrs.get("axis", 0)) % max(data.ndim, 1)
    return (data.size // data.shape[axis] if data.ndim and data.shape[axis] else 0) * indices.size


def _gather_nd(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return inputs[1].size * max(inputs[0].size, 1)


def _concat(inputs: Inputs, attrs: dict[str, Any]) -> float:
    return sum(x.size for x in _present(inputs))


_PREDICTORS: dict[str, Callable[[Inputs, dict[str, Any]], float]] = {
    **{op: _broadcasting for op in (
        "Add", "And", "Clip", "Div", "Equal", "Greater", "GreaterOrEqual", "LayerNormalization",
        "Less", "LessOrEqual", "Max", "Min", "Mod", "Mul", "Or", "Pow", "Sub", "Sum", "Where",
        "Xor")},
    "Expand": _expand, "Tile": _tile, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "Pad": _pad, "MatMul": _matmul, "Gemm": _gemm, "Einsum": _einsum, "Conv": _conv,
    "Gather": _gather, "GatherND": _gather_nd, "Concat": _concat,
}
PREDICTED_OPS = frozenset(_PREDICTORS)


def result_elements(op_type: str, inputs: Inputs, attrs: dict[str, Any]) -> float:
    """An upper bound of the elements of the node's largest result (`UNBOUNDED` if unknown)."""
    if op_type in NON_GROWING:
        return _largest_input(inputs, attrs)
    predictor = _PREDICTORS.get(op_type)
    if predictor is None:
        return UNBOUNDED
    try:
        return predictor(inputs, attrs)
    except (IndexError, TypeError, ValueError, ZeroDivisionError, AttributeError):
        return UNBOUNDED  # malformed inputs: not folded; the node is checked as a node
