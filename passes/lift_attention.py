"""`lift-transformer` rule for multi-head attention, anchored at the Softmax.

Recognised (walking back from the Softmax and forward to the head merge):

    q [B,Lq,D] -Reshape-> [B,Lq,H,d] -Transpose(0,2,1,3)-> Q_h   (scalar Mul/Div allowed anywhere)
    k [B,Lk,D] -Reshape-> [B,Lk,H,d] -Transpose(s) composing to (0,2,3,1)-> K_h^T
    v [B,Lk,D] -Reshape-> [B,Lk,H,d] -Transpose(0,2,1,3)-> V_h
    scores = MatMul(Q_h, K_h^T), then any chain of
        Mul/Div by a scalar constant (the scale; 1/sqrt(d) or Div by sqrt(d)),
        Add(scores, mask)            mask broadcastable to [B,H,Lq,Lk]: additive mask operand;
                                     a constant all-zero mask is dropped, a constant causal mask
                                     becomes `causal`; a term computed from activations must be
                                     DeBERTa's c2p / p2c (`lift_disentangled_attention.py`),
                                     which become the op's position operands,
        Where(cond, scores, fill)    fill a very negative scalar; constant causal cond -> `causal`,
                                     another constant cond (a local window) -> a constant
                                     additive mask, other cond -> an additive mask
                                     Where(cond, 0, fill) (host op)
    Softmax(axis = last) -> MatMul(P, V_h) -> Transpose(0,2,1,3) -> Reshape [B,Lq,D] or [B*Lq,D]

Every intermediate must have a single use, every perm, axis and reshape shape is checked, and
the scale is the product of all scalar factors on Q, K and the scores. The head split and
merge walks (with rotary, repeat_kv and fused QKV parts) are in `lift_attention_heads.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.transformer import AttentionOp, RotaryOp
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from esact_cc.passes.lift_attention_heads import (
    HEAD_SPLIT_PERM,
    KEY_TRANSPOSED_PERM,
    HeadSplit,
    merge_heads,
    split_heads,
)
from esact_cc.passes.lift_disentangled_attention import (
    PositionTermMatch,
    match_position_terms,
    resolve_position_terms,
)
from esact_cc.passes.lift_transformer_pattern import LiftPattern, Phase, register_lift_pattern
from xdsl.dialects.builtin import Float32Type, IntegerAttr, NameLoc, NoneAttr, StringAttr, TensorType, i64
from xdsl.ir import Operation, OpResult, SSAValue

from esact_cc.quantized_kernels import causal_visible
from esact_cc.tensor_types import dense_attr_from_numpy, tensor_type_of

MASK_FILL_MAX = -1e4
"""A Where fill value at or below this masks a score out (HF uses finfo.min, older code -1e4)."""

@dataclass
class _Scores:
    """What the walk from the softmax input back to Q K^T collected."""

    scale: float = 1.0
    causal: bool = False
    additive: list[SSAValue] = field(default_factory=list)
    """Additive mask values (already [.., Lq, Lk]-broadcastable)."""
    where_masks: list[tuple[SSAValue, bool, float, Operation]] = field(default_factory=list)
    """Non-constant Where conditions to make additive: (cond, visible_if_true, fill, op)."""
    flat_additive: list[SSAValue] = field(default_factory=list)
    """Additive masks of [B*H or 1, Lq or 1, Lk] scores."""
    flat_heads: tuple[int, int] | None = None
    """(B, H) when the scores were computed as [B*H, Lq, Lk] (a 3-D batched MatMul)."""
    constant_masks: list[np.ndarray] = field(default_factory=list)
    """Constant Where conditions other than causal (GPT-Neo's local window), as additive
    masks (0 where visible, -inf elsewhere)."""
    positions: list[PositionTermMatch] = field(default_factory=list)
    """DeBERTa's disentangled c2p / p2c terms (`lift_disentangled_attention.py`)."""


def _visibility_is_causal(visible: np.ndarray, lq: int, lk: int) -> bool:
    """True if a boolean array broadcast to [..., Lq, Lk] is the causal pattern in every slice."""
    if visible.ndim < 2 or visible.shape[-2:] not in ((lq, lk),):
        return False
    flat = visible.reshape(-1, lq, lk)
    return bool(np.all(flat == causal_visible(lq, lk)[None]))


@register_lift_pattern
class AttentionPattern(LiftPattern):
    """Softmax at the heart of scaled dot-product attention -> transformer.attention."""

    name = "attention"
    anchors = ("Softmax",)
    phase = Phase.ATTENTION

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        # A Softmax over a 4-D tensor fed by a MatMul chain: everything else is not attention.
        return len(shape_of(op.operands[0])) == 4

    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        where = location_name(op)
        batch, heads, lq, lk = shape_of(op.operands[0])
        axis = int(graph.attrs(op).get("axis", -1))
        require(axis % 4 == 3, f"{where}: Softmax axis {axis} is not the last axis")
        probs = self._skip_nan_guard(op.results[0], graph, where)
        graph.require_single_use(probs, f"the attention probabilities of {where}")
        flatten = graph.only_user(probs, "Reshape")
        if flatten is not None and shape_of(flatten.results[0]) == (batch * heads, lq, lk):
            probs = flatten.results[0]  # P V as a 3-D batched MatMul
            graph.require_single_use(probs, f"the flattened probabilities of {where}")
        pv = graph.only_user(probs, "MatMul")
        require(
            pv is not None and pv.operands[0] is probs,
            f"{where}: the probabilities are not the left operand of a MatMul (P V)",
        )
        assert pv is not None

        scores = _Scores()
        qk = self._walk_scores(op.operands[0], graph, scores, lq, lk, where)
        # A position term's GEMM reads Q's (c2p) or K's (p2c) heads too.
        reads = {t.keys: t.x for t in scores.positions}
        qs = split_heads(qk.operands[0], graph, HEAD_SPLIT_PERM, "Q", shared=reads.get(False))
        ks = split_heads(qk.operands[1], graph, KEY_TRANSPOSED_PERM, "K^T", shared=reads.get(True))
        vs = split_heads(pv.operands[1], graph, HEAD_SPLIT_PERM, "V")
        q, k, v = qs.source, ks.source, vs.source
        assert q is not None and k is not None and v is not None
        require(vs.scale == 1.0, f"{where}: V is scaled by {vs.scale}")
        require(vs.rotary is None, f"{where}: V carries a rotary embedding")
        require(
            qs.repeat == 1 and qs.heads == heads and ks.heads * ks.repeat == heads
            and (vs.heads, vs.repeat) == (ks.heads, ks.repeat),
            f"{where}: head counts differ (Q {qs.heads}, K {ks.heads} x{ks.repeat}, "
            f"V {vs.heads} x{vs.repeat}, scores {heads})",
        )
        (qb, ql, qd), (kb, kl, kd), (vb, vl, vd) = (split.shape for split in (qs, ks, vs))
        require(
            qb == kb == vb == batch and ql == lq and kl == vl == lk and qd == kd * ks.repeat,
            f"{where}: Q {fmt_shape((qb, ql, qd))}, K {fmt_shape((kb, kl, kd))}, "
            f"V {fmt_shape((vb, vl, vd))} do not fit scores {fmt_shape((batch, heads, lq, lk))}",
        )
        scale = scores.scale * qs.scale * ks.scale
        require(
            math.isfinite(scale) and scale > 0, f"{where}: attention scale {scale} is not positive"
        )
        width = vd * vs.repeat
        merge, merged_2d = merge_heads(pv, graph, batch, lq, width, where)
        position_arrays = resolve_position_terms(scores.positions, graph, qs, ks, scale, heads,
                                                 lq, lk, where)

        # All checks passed: build the mask operand (host ops if needed) and the attention op.
        mask = self._build_mask(scores, graph, merge)
        positions = {name: graph.new_weight(array, f"attention.{name}", merge)
                     for name, array in position_arrays.items()}
        q, k, v = (_gather_columns(value, split, graph, merge) for value, split in
                   ((q, qs), (k, ks), (v, vs)))
        q = _apply_rotary(q, qs, graph, merge)
        k = _apply_rotary(k, ks, graph, merge)
        attention = AttentionOp(
            q, k, v, mask, heads, scale, scores.causal, TensorType(Float32Type(), (batch, lq, width)),
            kv_heads=None if ks.repeat == 1 else ks.heads, positions=positions,
        )
        attention.location = op.location
        merge.parent_block().insert_op_before(attention, merge)  # type: ignore[union-attr]
        if merged_2d:
            # Keep the exporter's Reshape to [B*Lq, D] (a following linear absorbs it).
            merge.operands = [attention.result, *merge.operands[1:]]
        else:
            merge.results[0].replace_all_uses_with(attention.result)
        return attention

    @staticmethod
    def _skip_nan_guard(probs: SSAValue, graph: OnnxGraph, where: str) -> SSAValue:
        """sdpa exports guard the probabilities, Where(IsNaN(P), 0, P): a row whose every key
        is masked gives 0, which is what the attention op computes for it (the hardware's
        softmax rule). Returns the guarded value, or `probs` when there is no guard."""
        if probs.has_one_use() or probs.uses.get_length() != 2:
            return probs
        users = {use.operation for use in probs.uses}
        isnan = next((u for u in users if isinstance(u, OnnxOperation) and u.op_type == "IsNaN"), None)
        guard = graph.only_user(isnan.results[0], "Where") if isnan is not None else None
        if guard is None or users != {isnan, guard}:
            return probs
        cond, zero, kept = guard.operands
        require(
            cond is isnan.results[0] and kept is probs and graph.is_const(zero)
            and graph.scalar(zero, f"{where}: the NaN guard's fill") == 0.0,
            f"{where}: {location_name(guard)} is not Where(IsNaN(P), 0, P)",
        )
        return guard.results[0]

    # --- scores ----------------------------------------------------------------------
    def _walk_scores(
        self, value: SSAValue, graph: OnnxGraph, scores: _Scores, lq: int, lk: int, where: str
    ) -> OnnxOperation:
        """Walk from the softmax input back to the Q K^T MatMul, collecting scale and masks."""
        full_shape = shape_of(value)
        while True:
            op = graph.producer(value)
            require(op is not None, f"{where}: the scores come from outside the onnx dialect")
            assert op is not None
            kind = op.op_type
            if kind == "MatMul":
                return op
            graph.require_single_use(value, f"{where}: the scores produced by {location_name(op)}")
            step = _SCORE_STEPS.get(kind)
            if step is None:
                raise NoMatch(f"{where}: the scores pass through onnx.{kind} ({location_name(op)})")
            value = step(self, op, graph, scores, full_shape, lq, lk, where)
            full_shape = shape_of(value)

    def _take_unflatten(self, op, graph, scores, full_shape, lq, lk, where) -> SSAValue:
        """Reshape [B*H, Lq, Lk] -> [B, H, Lq, Lk]: the scores were made by a 3-D batched
        MatMul (DeBERTa, BLOOM). Masks met before it are [B*H or 1, Lq, Lk]."""
        source = op.operands[0]
        src, dst = shape_of(source), shape_of(op.results[0])
        require(
            len(dst) == 4 and src == (dst[0] * dst[1], *dst[2:]) and scores.flat_heads is None,
            f"{where}: the scores are reshaped {fmt_shape(src)} -> {fmt_shape(dst)}, expected "
            "[B*H, Lq, Lk] -> [B, H, Lq, Lk]",
        )
        scores.flat_heads = (dst[0], dst[1])
        return source

    def _take_scale(self, op, graph, scores, full_shape, lq, lk, where) -> SSAValue:
        other, factor = graph.split_const(op, f"score scale {op.op_type}")
        require(factor != 0 and math.isfinite(factor), f"{where}: score scale {factor}")
        scores.scale *= factor if op.op_type == "Mul" else 1.0 / factor
        return other

    def _take_additive_mask(self, op, graph, scores, full_shape, lq, lk, where) -> SSAValue:
        a, b = op.operands
        candidates = [(a, b), (b, a)]
        # The scores operand has the full score shape and leads back to Q K^T; try both orders.
        for chain, mask in candidates:
            if shape_of(chain) != full_shape or graph.is_const(chain):
                continue
            if not self._leads_to_matmul(chain, graph):
                continue
            mask_shape = shape_of(mask)
            require(
                2 <= len(mask_shape) <= 4, f"{where}: mask {fmt_shape(mask_shape)} has rank < 2"
            )
            product = _activation_product_above(mask, graph)
            if product is not None:  # content dependent: DeBERTa's c2p / p2c, else a near miss
                scores.positions.extend(
                    match_position_terms(mask, graph, full_shape, product, where))
                return chain
            require(
                all(m in (1, f) for m, f in zip(reversed(mask_shape), reversed(full_shape))),
                f"{where}: mask {fmt_shape(mask_shape)} does not broadcast to "
                f"{fmt_shape(full_shape)}",
            )
            require(mask.type.get_element_type() == Float32Type(), f"{where}: mask is not f32")  # type: ignore[attr-defined]
            constant = graph.const(mask)
            if constant is not None:
                if not np.any(constant):
                    return chain  # an all-zero mask (ViT) masks nothing
                visible = constant > MASK_FILL_MAX
                if np.all((constant == 0) | ~visible) and _visibility_is_causal(
                    np.broadcast_to(visible, (*visible.shape[:-2], lq, lk)), lq, lk
                ):
                    scores.causal = True
                    return chain
            elif self._mask_implies_causal(mask, graph, lq, lk):
                scores.causal = True  # still needed for padding; causal is implied by it
            # A mask added to [B*H, Lq, Lk] scores (before the reshape to 4-D) is made 4-D later.
            (scores.flat_additive if len(full_shape) == 3 else scores.additive).append(mask)
            return chain
        raise NoMatch(f"{where}: no operand of {location_name(op)} carries the scores")

    def _take_where_mask(self, op, graph, scores, full_shape, lq, lk, where) -> SSAValue:
        cond, if_true, if_false = op.operands
        if shape_of(if_true) == full_shape and not graph.is_const(if_true):
            chain, fill_value, visible_if_true = if_true, if_false, True
        else:
            chain, fill_value, visible_if_true = if_false, if_true, False
        require(
            shape_of(chain) == full_shape,
            f"{where}: no operand of {location_name(op)} carries the scores",
        )
        fill = graph.scalar(fill_value, f"{where}: Where fill")
        require(
            fill <= MASK_FILL_MAX, f"{where}: Where fill {fill} does not mask (> {MASK_FILL_MAX})"
        )
        cond_const = graph.const(cond)
        if cond_const is not None:
            visible = cond_const.astype(bool) if visible_if_true else ~cond_const.astype(bool)
            require(visible.ndim >= 2, f"{where}: Where condition has rank < 2")
            full = np.broadcast_to(visible, (*visible.shape[:-2], lq, lk))
            if _visibility_is_causal(full, lq, lk):
                scores.causal = True
            else:  # a local (windowed) causal band or any fixed pattern: a constant mask
                require(bool(np.all(full.any(axis=-1))), f"{where}: a constant Where condition "
                        "hides every key from some query")
                # -inf, not the fill: summed with a padding mask of the same fill it would overflow
                scores.constant_masks.append(np.where(visible, 0.0, -np.inf).astype(np.float32))
        else:
            require(2 <= len(shape_of(cond)) <= 4, f"{where}: Where condition has rank < 2")
            scores.where_masks.append((cond, visible_if_true, fill, op))
        return chain

    def _leads_to_matmul(self, value: SSAValue, graph: OnnxGraph) -> bool:
        """Does a chain of scale / mask ops lead from `value` back to a 4-D MatMul?"""
        for _ in range(16):
            op = graph.producer(value)
            if op is None:
                return False
            if op.op_type == "MatMul":
                return len(shape_of(op.operands[0])) in (3, 4) and not graph.is_const(op.operands[1])
            if op.op_type == "Reshape":
                value = op.operands[0]
                continue
            if op.op_type not in ("Mul", "Div", "Add", "Where"):
                return False
            full = shape_of(value)
            nexts = [o for o in op.operands if shape_of(o) == full and not graph.is_const(o)]
            if not nexts:
                return False
            value = nexts[0] if op.op_type != "Where" else nexts[-1]
        return False

    @staticmethod
    def _mask_implies_causal(mask: SSAValue, graph: OnnxGraph, lq: int, lk: int) -> bool:
        """Mask = Where([Expand](And(C, ...)), 0, fill) with C a constant causal pattern (GPT-2
        dynamo; LLaMA's legacy export broadcasts the conjunction)."""
        where = graph.producer(mask, "Where")
        if where is None:
            return False
        cond, zero, fill = where.operands
        zero_v, fill_v = graph.const(zero), graph.const(fill)
        if zero_v is None or fill_v is None or zero_v.size != 1 or fill_v.size != 1:
            return False
        if float(zero_v.reshape(-1)[0]) != 0.0 or float(fill_v.reshape(-1)[0]) > MASK_FILL_MAX:
            return False
        expand = graph.producer(cond, "Expand")  # a broadcast keeps the pattern (LLaMA legacy)
        conjunction = graph.producer(cond if expand is None else expand.operands[0], "And")
        if conjunction is None:
            return False
        for operand in conjunction.operands:
            constant = graph.const(operand)
            if constant is not None and constant.ndim >= 2:
                full = np.broadcast_to(constant.astype(bool), (*constant.shape[:-2], lq, lk))
                if _visibility_is_causal(full, lq, lk):
                    return True
        return False

    @staticmethod
    def _build_mask(scores: _Scores, graph: OnnxGraph, before: Operation) -> SSAValue | None:
        """One additive mask value: the masks found, Where conditions turned additive, summed."""
        block = before.parent_block()
        assert block is not None
        masks = list(scores.additive)
        for flat in scores.flat_additive:
            shape = shape_of(flat)
            if shape[0] == 1:  # [1, Lq, Lk] broadcasts over batch and heads as it is
                masks.append(flat)
                continue
            assert scores.flat_heads is not None
            dims = (*scores.flat_heads, *shape[1:])
            masks.append(_host_reshape(flat, dims, f"{_origin(flat)}/as_4d", graph, before))
        for constant in scores.constant_masks:
            masks.append(graph.new_weight(constant, "attention.constant_mask", before))
        for cond, visible_if_true, fill, like in scores.where_masks:
            zero = graph.new_onnx_op(
                "Constant",
                [],
                tensor_type_of(np.zeros((), np.float32)),
                {"value": dense_attr_from_numpy(np.zeros((), np.float32))},
                like,
            )
            masked = graph.new_onnx_op(
                "Constant",
                [],
                tensor_type_of(np.zeros((), np.float32)),
                {"value": dense_attr_from_numpy(np.array(fill, np.float32))},
                like,
            )
            pair = (
                [zero.results[0], masked.results[0]]
                if visible_if_true
                else [masked.results[0], zero.results[0]]
            )
            mask_type = TensorType(Float32Type(), shape_of(cond))
            additive = graph.new_onnx_op("Where", [cond, *pair], mask_type, {}, like)
            for new_op in (zero, masked, additive):
                block.insert_op_before(new_op, before)
            masks.append(additive.results[0])
        if not masks:
            return None
        total = masks[0]
        for extra in masks[1:]:
            shape = tuple(np.broadcast_shapes(shape_of(total), shape_of(extra)))
            add = graph.new_onnx_op(
                "Add", [total, extra], TensorType(Float32Type(), shape), {}, before
            )
            block.insert_op_before(add, before)
            total = add.results[0]
        return total


def _activation_product_above(value: SSAValue, graph: OnnxGraph, limit: int = 64) -> Operation | None:
    """A MatMul (of an activation: constant ones are folded) among the ops `value` is computed
    from (within `limit` ops), else None: padding masks, ALiBi and T5's bucketed bias have none."""
    stack, seen = [value], set()
    while stack and len(seen) < limit:
        op = graph.producer(stack.pop())
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        if op.op_type == "MatMul":  # constant products are folded: this one reads activations
            return op
        stack.extend(op.operands)
    return None


def _gather_columns(
    source: SSAValue, split: HeadSplit, graph: OnnxGraph, before: Operation
) -> SSAValue:
    """The part of a fused interleaved projection `split` reads (onnx.Gather of its columns,
    which the split-linear phase turns into a linear), else `source`."""
    if split.columns is None:
        return source
    block = before.parent_block()
    assert block is not None
    indices = graph.new_onnx_op("Constant", [], tensor_type_of(split.columns),
                                {"value": dense_attr_from_numpy(split.columns)}, before)
    batch, length, _ = shape_of(source)
    gather = graph.new_onnx_op(
        "Gather", [source, indices.results[0]],
        TensorType(Float32Type(), (batch, length, split.columns.size)),
        {"axis": IntegerAttr(-1, i64)}, before)
    block.insert_ops_before([indices, gather], before)
    return gather.results[0]


def _origin(value: SSAValue) -> str:
    """A name for where `value` comes from (its op's node name, or the input's name)."""
    return location_name(value.op) if isinstance(value, OpResult) else (value.name_hint or "input")


def _rotary_table(table: np.ndarray | SSAValue, hint: str, graph: OnnxGraph,
                  before: Operation) -> SSAValue:
    """A rotary table as the op's operand: a weight handle [L, R], or a computed
    [B or 1, 1, L, R] value reshaped (on the host) to [B or 1, L, R]."""
    if isinstance(table, np.ndarray):
        return graph.new_weight(table, hint, before)
    lead, _, length, rotary_dim = shape_of(table)
    return _host_reshape(table, (lead, length, rotary_dim), f"{_origin(table)}/{hint}", graph,
                         before)


def _host_reshape(value: SSAValue, dims: tuple[int, ...], name: str, graph: OnnxGraph,
                  before: Operation) -> SSAValue:
    """onnx.Reshape(value, dims) named `name` (host segments are ONNX graphs: node names must
    be unique), made once: the layers and Q / K that read one table or bias share it."""
    for use in value.uses:
        if isinstance(use.operation, OnnxOperation) and location_name(use.operation) == name:
            return use.operation.results[0]
    shape = np.array(dims, np.int64)
    target = graph.new_onnx_op("Constant", [], tensor_type_of(shape),
                               {"value": dense_attr_from_numpy(shape)}, before)
    reshape = graph.new_onnx_op("Reshape", [value, target.results[0]],
                                TensorType(Float32Type(), tuple(int(d) for d in dims)), {}, before)
    reshape.location = NameLoc(StringAttr(name), NoneAttr())
    before.parent_block().insert_ops_before([target, reshape], before)  # type: ignore[union-attr]
    return reshape.results[0]


def _apply_rotary(
    source: SSAValue, split: HeadSplit, graph: OnnxGraph, before: Operation
) -> SSAValue:
    """`source` with the split's rotary embedding applied (a `transformer.rotary` op), if any.
    Every layer's Q and K usually share one table pair: stored once (`new_weight`)."""
    if split.rotary is None:
        return source
    cos, sin = (_rotary_table(table, name, graph, before) for table, name in
                ((split.rotary.cos, "rotary.cos"), (split.rotary.sin, "rotary.sin")))
    op = RotaryOp(source, cos, sin, split.heads, split.rotary.rotary_dim, source.type)
    op.location = before.location
    before.parent_block().insert_op_before(op, before)  # type: ignore[union-attr]
    return op.result


# What each op on the score chain (softmax input back to Q K^T) contributes.
_SCORE_STEPS = {
    "Mul": AttentionPattern._take_scale,
    "Div": AttentionPattern._take_scale,
    "Add": AttentionPattern._take_additive_mask,
    "Where": AttentionPattern._take_where_mask,
    "Reshape": AttentionPattern._take_unflatten,
}
