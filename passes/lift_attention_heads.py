"""Head split and head merge matching of the attention lift (`lift_attention.py`).

Head split, walking back from a per-head operand of Q K^T or P V to its [B, L, D] projection:

    [B, L, D] -Reshape-> [B, L, H, d] -Transpose(s)-> the per-head operand

with scalar Mul/Div anywhere (they join the scale), one rotary embedding and one repeat_kv
(`lift_rotary.py`), the [B*H, L, d] views of a 3-D batched MatMul, and a Gather of a fused
per-head interleaved QKV projection (`lift_fused_qkv.py`) in place of the Reshape. The
transposes must compose to the expected perm; none may sit between rotary and repeat_kv.

Head merge, walking forward from P V: Transpose(0, 2, 1, 3) -> Reshape [B, Lq, D] or [B*Lq, D].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_fused_qkv import match_interleaved_split
from esact_cc.passes.lift_rotary import (
    Rotary,
    match_flat_transpose,
    match_repeat_kv,
    match_rotary,
)
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from xdsl.ir import SSAValue

HEAD_SPLIT_PERM = (0, 2, 1, 3)
KEY_TRANSPOSED_PERM = (0, 2, 3, 1)
_IDENTITY_PERM = (0, 1, 2, 3)
_SWAP_LAST_PERM = (0, 1, 3, 2)


@dataclass
class HeadSplit:
    """What the walk from a per-head operand back to its head split found."""

    source: SSAValue | None = None
    """The [B, L, D] projection."""
    scale: float = 1.0
    heads: int = 0
    """Heads of the source (K / V: the kv heads)."""
    rotary: Rotary | None = None
    repeat: int = 1
    """repeat_kv factor (heads / kv_heads)."""
    columns: np.ndarray | None = None
    """A fused, per-head interleaved QKV projection: the source's columns this part reads."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """[B, L, D] of the part this split reads (of the source, or of its columns)."""
        assert self.source is not None
        batch, length, width = shape_of(self.source)
        return batch, length, width if self.columns is None else self.columns.size


def split_heads(
    value: SSAValue, graph: OnnxGraph, expected_perm: tuple[int, ...], what: str,
    shared: SSAValue | None = None,
) -> HeadSplit:
    """Walk from a per-head operand back to its [B, L, D] source, through scalar scales,
    transposes, a rotary embedding and repeat_kv (`lift_rotary.py`). `shared`: a value on
    the way whose other use the caller checked (DeBERTa's position term reads Q's heads)."""
    walk = _HeadWalk(graph, expected_perm, what)
    walk.shared = shared
    next_value: SSAValue | None = value
    while next_value is not None:
        next_value = walk.step(next_value)
    return walk.split


class _HeadWalk:
    """One head-split walk: the split found so far and the transposes crossed."""

    def __init__(self, graph: OnnxGraph, expected_perm: tuple[int, ...], what: str) -> None:
        self.graph, self.expected_perm, self.what = graph, expected_perm, what
        self.split = HeadSplit()
        self.perm = _IDENTITY_PERM  # composite perm from the Reshape output to the operand
        self.segment = _IDENTITY_PERM  # the same since the last rotary / repeat_kv boundary
        self.boundaries = 0
        self.shared: SSAValue | None = None  # a rotary input: its other uses were checked

    def step(self, value: SSAValue) -> SSAValue | None:
        """Cross the op producing `value`: the value before it, or None at the head split."""
        op = self.graph.producer(value)
        require(op is not None, f"the {self.what} heads come from outside the onnx dialect")
        assert op is not None
        if value is not self.shared:
            self.graph.require_single_use(value, f"the {self.what} heads at {location_name(op)}")
        if op.op_type in ("Mul", "Div"):
            return self._through_scale(op)
        if op.op_type == "Transpose":
            return self._through_transpose(op)
        if op.op_type in ("Add", "Concat") and self.split.rotary is None:
            value, self.split.rotary = match_rotary(op, self.graph, f"the {self.what} heads")
            self.shared = value
            self._cross_boundary()
            return value
        if op.op_type in ("Reshape", "Expand"):
            return self._through_reshape(op, value)
        if op.op_type == "Gather":  # one part of a per-head interleaved QKV projection
            self._require_split_perm()
            self.split.source, self.split.columns, self.split.heads = match_interleaved_split(
                op, self.graph, self.what)
            return None
        raise self._no_match(op)

    def _through_scale(self, op: OnnxOperation) -> SSAValue:
        value, factor = self.graph.split_const(op, f"{self.what} scale {op.op_type}")
        require(factor != 0 and math.isfinite(factor), f"{self.what} scale {factor}")
        self.split.scale *= factor if op.op_type == "Mul" else 1.0 / factor
        return value

    def _through_transpose(self, op: OnnxOperation) -> SSAValue:
        p = tuple(int(i) for i in self.graph.attrs(op).get("perm", (3, 2, 1, 0)))
        if p == (0, 2, 1):  # on [B*H, L, d]: the 4-D (0, 1, 3, 2)
            p = _SWAP_LAST_PERM
        require(
            len(p) == 4,
            f"{self.what} transpose {location_name(op)} perm {list(p)} is not 4-D",
        )
        self._permute(p)
        return op.operands[0]

    def _through_reshape(self, op: OnnxOperation, value: SSAValue) -> SSAValue | None:
        """A Reshape / Expand: a batch-and-heads view, a flat transpose, repeat_kv, or (a
        Reshape) the head split itself."""
        what = f"the {self.what} heads"
        if op.op_type == "Reshape" and _merges_batch_and_heads(op):
            return op.operands[0]  # [B, H, L, d] -> [B*H, L, d] for a 3-D batched MatMul
        if op.op_type == "Reshape" and (
            flat := match_flat_transpose(value, self.graph, what)
        ) is not None:
            self._permute(_SWAP_LAST_PERM)
            return flat
        if self.split.repeat == 1 and (repeat := match_repeat_kv(value, self.graph, what)):
            value, self.split.repeat = repeat
            self._cross_boundary()
            return value
        if op.op_type == "Reshape":
            self._take_head_split(op)
            return None
        raise self._no_match(op)

    def _take_head_split(self, op: OnnxOperation) -> None:
        """The [B, L, D] -> [B, L, H, D/H] Reshape: the split's source and head count."""
        self._require_split_perm()
        source = op.operands[0]
        src, dst = shape_of(source), shape_of(op.results[0])
        require(
            len(src) == 3 and len(dst) == 4 and dst[:2] == src[:2] and dst[2] * dst[3] == src[2],
            f"the {self.what} head split {location_name(op)} reshapes {fmt_shape(src)} -> "
            f"{fmt_shape(dst)}, expected [B, L, D] -> [B, L, H, D/H]",
        )
        self.split.source, self.split.scale = _unscale(source, self.graph, self.split.scale,
                                                       self.what)
        self.split.heads = dst[2]

    def _permute(self, p: tuple[int, ...]) -> None:
        self.perm = tuple(p[i] for i in self.perm)
        self.segment = tuple(p[i] for i in self.segment)

    def _cross_boundary(self) -> None:
        # Rotary and repeat_kv both act on the [B, H, L, d] layout: nothing may permute axes
        # between them.
        require(
            not self.boundaries or self.segment == _IDENTITY_PERM,
            f"the {self.what} heads are transposed between rotary and repeat_kv",
        )
        self.boundaries, self.segment = self.boundaries + 1, _IDENTITY_PERM

    def _require_split_perm(self) -> None:
        require(
            self.perm == self.expected_perm
            and (not self.boundaries or self.segment == HEAD_SPLIT_PERM),
            f"the {self.what} head transposes compose to perm {list(self.perm)}, "
            f"expected {list(self.expected_perm)}",
        )

    def _no_match(self, op: OnnxOperation) -> NoMatch:
        return NoMatch(f"the {self.what} heads pass through onnx.{op.op_type} "
                       f"({location_name(op)})")


def merge_heads(
    pv: OnnxOperation, graph: OnnxGraph, batch: int, lq: int, width: int, where: str
) -> tuple[OnnxOperation, bool]:
    """(the Reshape that merges heads, whether it flattens to [B*Lq, D])."""
    value = pv.results[0]
    perm = _IDENTITY_PERM
    while True:
        graph.require_single_use(
            value, f"{where}: the attention output at {location_name(value.op)}"
        )  # type: ignore[union-attr]
        user = graph.only_user(value)
        require(
            user is not None, f"{where}: the attention output is used outside the onnx dialect"
        )
        assert user is not None
        if user.op_type == "Reshape" and len(shape_of(value)) == 3:
            flat, out = shape_of(value), shape_of(user.results[0])
            require(
                len(out) == 4 and flat == (out[0] * out[1], *out[2:]) and out[0] == batch,
                f"{where}: the 3-D attention output {fmt_shape(flat)} is reshaped to "
                f"{fmt_shape(out)}, expected [B, H, Lq, Dv]",
            )
            value = user.results[0]
            continue
        if user.op_type == "Transpose":
            p = tuple(int(i) for i in graph.attrs(user).get("perm", (3, 2, 1, 0)))
            require(len(p) == 4, f"{where}: head merge transpose perm {list(p)} is not 4-D")
            perm = tuple(perm[i] for i in p)
            value = user.results[0]
            continue
        require(
            user.op_type == "Reshape" and user.operands[0] is value,
            f"{where}: the attention output goes to onnx.{user.op_type}, "
            "expected Transpose + Reshape",
        )
        require(
            perm == HEAD_SPLIT_PERM,
            f"{where}: the head merge transposes compose to perm {list(perm)}, "
            "expected [0, 2, 1, 3]",
        )
        out = shape_of(user.results[0])
        if out == (batch, lq, width):
            return user, False
        require(
            out == (batch * lq, width),
            f"{where}: head merge reshapes to {fmt_shape(out)}, expected "
            f"{fmt_shape((batch, lq, width))} or {fmt_shape((batch * lq, width))}",
        )
        return user, True


def _unscale(source: SSAValue, graph: OnnxGraph, scale: float, what: str
             ) -> tuple[SSAValue, float]:
    """A scalar Mul/Div applied to the projection before the head split joins the scale."""
    op = graph.producer(source, "Mul", "Div")
    if op is None or not graph.single_use(source):
        return source, scale
    try:
        inner, factor = graph.split_const(op, f"{what} scale")
    except NoMatch:
        return source, scale
    if factor == 0 or not math.isfinite(factor):
        return source, scale
    return inner, scale * (factor if op.op_type == "Mul" else 1.0 / factor)


def _merges_batch_and_heads(reshape: OnnxOperation) -> bool:
    """Is `reshape` [B, H, L, d] -> [B*H, L, d]?"""
    src, dst = shape_of(reshape.operands[0]), shape_of(reshape.results[0])
    return len(src) == 4 and dst == (src[0] * src[1], *src[2:])
