"""Calibrating a long-sequence program on the first token rows of its synthetic sample.

One synthetic sample of a 512-token program is 512 activation rows, twice the rows budget
(SYNTHETIC_CALIBRATION_ROWS): its FP32 forward was a fifth of the compile. With a token subset,
the transformer ops compute only the first `keep` token rows, their attention over the first
`keep` keys: the sample is then a `keep`-token input (positions 0..keep-1, as the host regions
that add position embeddings computed them), and the ranges are those a model exported at
`keep` tokens records (bench/calibration_short_sample.py: BERT-base and all-MiniLM-L6-v2 at
512 tokens; docs/design.md section 8, thirteenth stop).

A plan exists only where that slicing is defined: every op up to the last one calibration
reads is a weight, a host region reading no sliced value (embeddings, mask arithmetic at the
start), or one of the row-wise transformer ops below whose token axis is -2 ([B, L, D]); every
attention is self-attention over the same L, without the masked-form or position-table
operands. Otherwise all rows are computed, and the reason is said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Block, Operation, SSAValue

from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.ir_queries import op_label

_ROW_WISE_OPERANDS: dict[type, tuple[str, ...]] = {
    transformer.LinearOp: ("x",),
    transformer.LayerNormOp: ("x",),
    transformer.RmsNormOp: ("x",),
    transformer.GeluOp: ("x",),
    transformer.SiluOp: ("x",),
    transformer.ReluOp: ("x",),
    transformer.AddOp: ("lhs", "rhs"),
    transformer.MulOp: ("lhs", "rhs"),
    transformer.AttentionOp: ("q", "k", "v", "mask"),
}
"""The transformer ops computed on a token subset, and the operands that carry token rows
(axis -2; an attention mask also on its key axis, -1). Weights, biases and norm scales are
per channel, not per token, and are never sliced."""

_ATTENTION_FORM_OPERANDS = ("rows", "spa", "tokens", "head_mask", "c2p_table", "c2p_index",
                            "p2c_table", "p2c_index")
"""Attention operands of the masked and position-table forms, whose axes the plan does not
slice: an attention with any of them keeps all rows."""


@dataclass(frozen=True)
class TokenSubset:
    """Compute the first `keep` of `length` token rows in `ops`."""

    keep: int
    length: int
    ops: frozenset[Operation]

    def operands(self, op: Operation, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`op`'s operand values cut to the kept token rows (values already cut stay)."""
        sliced = list(args)
        names = _ROW_WISE_OPERANDS[type(op)]
        for index, operand in enumerate(op.operands):
            if _operand_name(op, operand) not in names:
                continue
            value = self.rows(sliced[index])
            if isinstance(op, transformer.AttentionOp) and operand is op.mask \
                    and value.shape[-1] == self.length:
                value = value[..., :self.keep]
            sliced[index] = value
        return sliced

    def rows(self, value: np.ndarray) -> np.ndarray:
        """The kept token rows of `value` (axis -2 of the sequence's length), or `value`."""
        if value.ndim >= 2 and value.shape[-2] == self.length:
            return value[..., :self.keep, :]
        return value

    def result_shape(self, op: Operation, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape `op` computes for a result the IR types as `shape`."""
        if op in self.ops and len(shape) >= 2 and shape[-2] == self.length:
            return (*shape[:-2], self.keep, shape[-1])
        return shape


def _operand_name(op: Operation, operand: SSAValue) -> str | None:
    for name in _ROW_WISE_OPERANDS[type(op)]:
        if getattr(op, name, None) is operand:
            return name
    return None


def token_subset(block: Block, last_op: int, rows_budget: int, sample_rows: int) -> TokenSubset | str | None:
    """The plan that computes `rows_budget` of a sample's `sample_rows` activation rows (the
    first rows_budget / batch tokens of each sequence) in `block`'s ops up to index `last_op`;
    None when a sample has no more rows; or why all rows must be computed."""
    if sample_rows <= rows_budget:
        return None
    length: int | None = None
    planned: set[Operation] = set()
    sliced: set[SSAValue] = set()
    for op in list(block.ops)[:last_op + 1]:
        if isinstance(op, WeightOp):
            continue
        if type(op) not in _ROW_WISE_OPERANDS:
            reader = next((nested for nested in op.walk() if sliced.intersection(nested.operands)), None)
            if reader is not None:
                return f"{op_label(reader)} reads token rows"
            continue
        if isinstance(op, transformer.AttentionOp):
            reason = _attention_unsliceable(op, length)
            if reason:
                return reason
            length = op.q.type.get_shape()[-2]  # type: ignore[attr-defined]
        planned.add(op)
        sliced.update(op.results)
    if length is None:
        return "no attention defines the token rows"
    keep = max(1, rows_budget // max(1, sample_rows // length))  # tokens per sequence of the batch
    if length <= keep:
        return None
    return TokenSubset(keep, length, frozenset(planned))


def _attention_unsliceable(op: transformer.AttentionOp, length: int | None) -> str | None:
    if op.is_quantized or any(getattr(op, name) is not None for name in _ATTENTION_FORM_OPERANDS):
        return f"{op_label(op)} is not a plain FP32 attention"
    shapes = [v.type.get_shape() if isinstance(v.type, TensorType) else () for v in (op.q, op.k, op.v)]
    if any(len(shape) != 3 for shape in shapes) or len({shape[1] for shape in shapes}) != 1:
        return f"{op_label(op)} is not self-attention over [B, L, D] rows"
    if length is not None and shapes[0][1] != length:
        return f"{op_label(op)} attends over {shapes[0][1]} tokens, another attention over {length}"
    return None
