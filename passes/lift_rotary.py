"""What `lift_attention` recognises between the head split and Q K^T / P V in modern decoders:
rotary position embeddings and the grouped-query `repeat_kv` expansion.

Rotary (Hugging Face's `apply_rotary_pos_emb`, both exporters), on a per-head value x
[B, H, L, d] with constant cos / sin tables broadcasting to [B, H, L, R]:

    full (R = d):  Add(Mul(x, cos), Mul(Concat(Neg(Slice(x, R/2:R)), Slice(x, 0:R/2)), sin))
    partial (Phi, GPT-NeoX): Concat(<full form on Slice(x, 0:R)>, Slice(x, R:d))

with Add / Mul operands in either order. cos and sin must be the same for every head (they are
functions of the position only): constant tables (positions fixed at export) become [L, R]
weight handles; tables computed from an input (explicit position ids, [B or 1, 1, L, R])
become [B or 1, L, R] activations the host computes.

repeat_kv (grouped-query and multi-query attention): x [B, Hkv, L, d] -Unsqueeze(axis 2)->
-Expand-> [B, Hkv, n, L, d] -Reshape-> [B, Hkv * n, L, d]; K / V head g serves query heads
g * n .. g * n + n - 1, which is `transformer.attention`'s `kv_heads` rule.

Flattened K^T (the dynamo exporter's sdpa decomposition): x [B, H, L, d] (or repeat_kv's
[B, Hkv, n, L, d]) -Reshape-> [B * H, L, d] -Transpose(0, 2, 1)-> -Reshape-> [B, H, d, L] is
Transpose(x, (0, 1, 3, 2)) written in three dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from xdsl.ir import Operation, SSAValue

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Rotary:
    """A recognised rotary embedding: its tables ([L, R] constants, or values broadcasting as
    [B or 1, 1, L, R]) and R."""

    cos: np.ndarray | SSAValue
    sin: np.ndarray | SSAValue
    rotary_dim: int


def _other(op: Operation, value: SSAValue) -> SSAValue:
    return op.operands[1] if op.operands[0] is value else op.operands[0]


def _last_axis_slice(op: OnnxOperation, graph: OnnxGraph, width: int, where: str) -> tuple[int, int]:
    """[start, end) of a Slice over the last axis of a [.., width] value, step 1."""
    inputs = graph.inputs(op)
    require(len(inputs) >= 4, f"{where}: {location_name(op)} has no axes input")
    values = [graph.const(v) if v is not None else None for v in inputs[1:5]]
    require(all(v is not None for v in values[:3]), f"{where}: {location_name(op)} is not constant")
    starts, ends, axes = (np.asarray(v).reshape(-1) for v in values[:3])  # type: ignore[arg-type]
    steps = np.asarray(values[3]).reshape(-1) if len(values) > 3 and values[3] is not None else [1]
    rank = len(shape_of(op.operands[0]))
    require(
        len(axes) == 1 and int(axes[0]) % rank == rank - 1 and int(steps[0]) == 1,
        f"{where}: {location_name(op)} does not slice the last axis with step 1",
    )
    start, end = int(starts[0]), int(ends[0])
    start = start + width if start < 0 else start
    end = width if end >= _INT64_MAX // 2 else (end + width if end < 0 else end)
    return max(0, min(start, width)), max(0, min(end, width))


def _table(graph: OnnxGraph, value: SSAValue, length: int, rotary_dim: int,
           what: str) -> np.ndarray | SSAValue:
    """A constant broadcasting to [..., L, R], equal across the leading axes -> [L, R]; a
    computed table [B or 1, 1, L, R] (one row per position, shared by the heads) -> itself."""
    array = graph.const(value)
    if array is None:
        shape = shape_of(value)
        require(len(shape) == 4 and shape[1] == 1 and shape[2:] == (length, rotary_dim),
                f"{what} is computed as {fmt_shape(shape)}, expected [B or 1, 1, {length}, "
                f"{rotary_dim}] (one row per position, the same for every head)")
        return value
    require(
        array.ndim >= 2 and array.shape[-2:] == (length, rotary_dim),
        f"{what} has shape {fmt_shape(array.shape)}, expected [.., {length}, {rotary_dim}]",
    )
    flat = np.asarray(array, np.float32).reshape(-1, length, rotary_dim)
    require(bool(np.all(flat == flat[:1])), f"{what} differs across batch elements or heads")
    return flat[0]


def _full_rotary(add: OnnxOperation, graph: OnnxGraph, where: str) -> tuple[SSAValue, Rotary, set]:
    """Add(Mul(x, cos), Mul(rotate_half(x), sin)) -> (x, tables, the ops matched)."""
    shape = shape_of(add.results[0])
    require(len(shape) == 4, f"{where}: rotary Add {location_name(add)} is not 4-D")
    length, rotary_dim = shape[2], shape[3]
    half = rotary_dim // 2
    muls = [graph.producer(v, "Mul") for v in add.operands]
    require(all(m is not None for m in muls), f"{where}: {location_name(add)} is not a rotary sum")
    for cos_mul, sin_mul in (muls, muls[::-1]):
        assert cos_mul is not None and sin_mul is not None
        concat = next((graph.producer(v, "Concat") for v in sin_mul.operands
                       if graph.producer(v, "Concat") is not None), None)
        if concat is None:
            continue
        x = next((v for v in cos_mul.operands if not graph.is_const(v)), None)
        require(x is not None, f"{where}: rotary cos product has no activation")
        assert x is not None
        require(rotary_dim % 2 == 0 and len(concat.operands) == 2,
                f"{where}: {location_name(concat)} is not rotate_half")
        neg = graph.expect(concat.operands[0], "Neg", f"{where}: rotate_half's first half")
        high = graph.expect(neg.operands[0], "Slice", f"{where}: rotate_half's negated half")
        low = graph.expect(concat.operands[1], "Slice", f"{where}: rotate_half's second half")
        require(high.operands[0] is x and low.operands[0] is x,
                f"{where}: rotate_half slices another value than the rotated one")
        require(
            _last_axis_slice(high, graph, rotary_dim, where) == (half, rotary_dim)
            and _last_axis_slice(low, graph, rotary_dim, where) == (0, half),
            f"{where}: rotate_half's slices are not [R/2:R] and [0:R/2]",
        )
        axis = int(graph.attrs(concat).get("axis", 0))
        require(axis % 4 == 3, f"{where}: rotate_half concatenates along axis {axis}")
        for value, what in ((neg.results[0], "negated half"), (high.results[0], "high slice"),
                            (low.results[0], "low slice"), (concat.results[0], "rotate_half"),
                            (cos_mul.results[0], "cos product"), (sin_mul.results[0], "sin product")):
            graph.require_single_use(value, f"{where}: the rotary {what}")
        cos = _table(graph, _other(cos_mul, x), length, rotary_dim, f"{where}: rotary cos")
        sin = _table(graph, _other(sin_mul, concat.results[0]), length, rotary_dim,
                     f"{where}: rotary sin")
        return x, Rotary(cos, sin, rotary_dim), {add, cos_mul, sin_mul, concat, neg, high, low}
    raise NoMatch(f"{where}: {location_name(add)} is not x * cos + rotate_half(x) * sin")


def match_rotary(op: OnnxOperation, graph: OnnxGraph, where: str) -> tuple[SSAValue, Rotary]:
    """`op` (Add: full, Concat: partial) ends a rotary embedding: (its per-head input, tables).
    The input may have other uses only inside the match."""
    if op.op_type == "Add":
        x, rotary, ops = _full_rotary(op, graph, where)
    else:
        require(op.op_type == "Concat" and len(op.operands) == 2,
                f"{where}: {location_name(op)} is not a partial rotary concat")
        width = shape_of(op.results[0])[-1]
        require(int(graph.attrs(op).get("axis", 0)) % 4 == 3,
                f"{where}: partial rotary {location_name(op)} does not concatenate the last axis")
        add = graph.expect(op.operands[0], "Add", f"{where}: the rotated part")
        rotated_x, rotary, ops = _full_rotary(add, graph, where)
        rot_slice = graph.expect(rotated_x, "Slice", f"{where}: the rotated channels")
        pass_slice = graph.expect(op.operands[1], "Slice", f"{where}: the passed channels")
        x = rot_slice.operands[0]
        require(pass_slice.operands[0] is x, f"{where}: partial rotary halves of different values")
        r = rotary.rotary_dim
        require(
            _last_axis_slice(rot_slice, graph, width, where) == (0, r)
            and _last_axis_slice(pass_slice, graph, width, where) == (r, width),
            f"{where}: partial rotary slices are not [0:{r}] and [{r}:{width}]",
        )
        for value in (add.results[0], pass_slice.results[0]):
            graph.require_single_use(value, f"{where}: the partial rotary at {location_name(op)}")
        ops |= {op, rot_slice, pass_slice}
    users = {id(use.operation) for use in x.uses}
    require(users <= {id(o) for o in ops},
            f"{where}: the rotary input is also used outside the rotary embedding")
    return x, rotary


def match_repeat_kv(value: SSAValue, graph: OnnxGraph, where: str) -> tuple[SSAValue, int] | None:
    """`value` [B, Hkv * n, L, d] (a Reshape) or [B, Hkv, n, L, d] (the Expand) is repeat_kv
    of x [B, Hkv, L, d]: (x, n); None if it is not an Expand chain at all."""
    expanded = value
    reshape = graph.producer(value, "Reshape")
    if reshape is not None:
        expanded = reshape.operands[0]
    expand = graph.producer(expanded, "Expand")
    if expand is None:
        return None
    unsqueeze = graph.expect(expand.operands[0], "Unsqueeze", f"{where}: the repeated K/V heads")
    x = unsqueeze.operands[0]
    src, big = shape_of(x), shape_of(expand.results[0])
    require(len(src) == 4 and len(big) == 5, f"{where}: repeat_kv of {fmt_shape(src)} is not 4-D")
    batch, kv_heads, length, width = src
    repeat = big[2]
    require(shape_of(unsqueeze.results[0]) == (batch, kv_heads, 1, length, width)
            and big == (batch, kv_heads, repeat, length, width),
            f"{where}: repeat_kv expands {fmt_shape(src)} to {fmt_shape(big)}, expected "
            f"[{batch}, {kv_heads}, n, {length}, {width}]")
    if reshape is not None:
        out = shape_of(reshape.results[0])
        require(out == (batch, kv_heads * repeat, length, width),
                f"{where}: repeat_kv reshapes to {fmt_shape(out)}")
    for v in (unsqueeze.results[0], expand.results[0]):
        graph.require_single_use(v, f"{where}: repeat_kv at {location_name(v.op)}")  # type: ignore[union-attr]
    return x, repeat


def match_flat_transpose(value: SSAValue, graph: OnnxGraph, where: str) -> SSAValue | None:
    """`value` [B, H, d, L] = the flattened transpose of x [B, H, L, d] (or [B, Hkv, n, L, d]):
    x; None if `value` is not a Reshape of a 3-D Transpose."""
    outer = graph.producer(value, "Reshape")
    transpose = graph.producer(outer.operands[0], "Transpose") if outer is not None else None
    inner = graph.producer(transpose.operands[0], "Reshape") if transpose is not None else None
    if (outer is None or transpose is None or inner is None
            or len(shape_of(transpose.results[0])) != 3 or len(shape_of(value)) != 4):
        return None
    x = inner.operands[0]
    src, out = shape_of(x), shape_of(value)
    perm = [int(i) for i in graph.attrs(transpose).get("perm", (2, 1, 0))]
    require(len(src) in (4, 5) and len(out) == 4 and perm == [0, 2, 1],
            f"{where}: {location_name(transpose)} is not a flattened transpose of the last axes")
    lead = int(np.prod(src[:-2]))
    require(
        shape_of(inner.results[0]) == (lead, *src[-2:])
        and out == (src[0], lead // src[0], src[-1], src[-2]),
        f"{where}: {location_name(outer)} reshapes {fmt_shape(src)} to {fmt_shape(out)} through "
        "three dimensions, not as a transpose of the last two axes",
    )
    for v in (inner.results[0], transpose.results[0]):
        graph.require_single_use(v, f"{where}: the flattened transpose at {location_name(v.op)}")  # type: ignore[union-attr]
    return x
