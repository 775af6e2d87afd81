"""Disentangled position scores of `transformer.attention` (DeBERTa's c2p / p2c terms; the op's
operands in dialects/gemm_ops.py, the design in docs/design.md section 3.3).

FP32: C_h[i, j] = Q_h[i] . c2p_table[h, c2p_index[i, j]] and P_h[i, j] = K_h[j] .
p2c_table[h, p2c_index[i, j]], summed and added to Q_h K_h^T before the scale.

INT8 (the hardware's steps, in its order): per head, the INT8 Q (or K) rows times the INT8
table (quantized with the op's `<term>_scale`) on the MAC array, DEQUANT with the factor
scale * x_scale * table_scale, then GATHER_ADD into the dequantized Q K^T scores, c2p first
(`runtime/isa_disentangled.gather_add`, the instruction's own kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esact_cc.dialects.gemm_ops import POSITION_TERMS, AttentionOp
from esact_cc.quantized_kernels import attention_score_scale, dequantize, int_matmul, quantize_int8
from esact_cc.runtime.isa_disentangled import gather_add

Array = np.ndarray


@dataclass(frozen=True)
class PositionTerm:
    """One disentangled term of an attention, with its constants' values."""

    table: Array
    """[H, P, d] FP32."""
    index: Array
    """[Lq, Lk] integer, in [0, P)."""
    keys: bool
    """p2c: the GEMM reads K's rows and the gather picks by key (GATHER_ADD's `transposed`)."""
    table_scale: float | None
    """INT8 scale of the table (quantized attention), else None."""


def position_terms(op: AttentionOp, values: dict[str, Array]) -> list[PositionTerm]:
    """The terms `op` carries, c2p first; `values` its operands by name (`operands_by_name`)."""
    terms = []
    for name in POSITION_TERMS:
        if f"{name}_table" not in values:
            continue
        table_scale = getattr(op, f"{name}_scale")
        terms.append(PositionTerm(
            np.asarray(values[f"{name}_table"], np.float32),
            np.asarray(values[f"{name}_index"]).astype(np.int64),
            name == "p2c", None if table_scale is None else table_scale.value.data))
    return terms


def _gather(source: Array, index: Array, keys: bool) -> Array:
    """source [..., L, P] gathered to [..., Lq, Lk]: [i, index[i, j]] (by query) or
    [j, index[i, j]] (by key)."""
    if keys:
        return source[..., np.arange(index.shape[1])[None, :], index]
    return np.take_along_axis(source, np.broadcast_to(index, (*source.shape[:-2], *index.shape)),
                              axis=-1)


def fp32_position_scores(q: Array, k: Array, heads: int, terms: list[PositionTerm]
                         ) -> Array | None:
    """Sum of the terms as [B, H, Lq, Lk] FP32 (before the attention scale), or None."""
    total = None
    for term in terms:
        x = k if term.keys else q
        batch, length, width = x.shape
        xh = x.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)
        source = np.matmul(xh, term.table.transpose(0, 2, 1)[None])  # [B, H, L, P]
        gathered = _gather(source, term.index, term.keys).astype(np.float32)
        total = gathered if total is None else total + gathered
    return total


def add_int8_position_scores(scores: Array, head: int, q_rows: Array, k_rows: Array,
                             terms: list[PositionTerm], op_scale: float, q_scale: float,
                             k_scale: float) -> Array:
    """A head's dequantized INT8 scores [Lq, Lk] with each term added as the hardware does
    (module doc); q_rows / k_rows are the head's INT8 Q [Lq, d] and K [Lk, d]."""
    for term in terms:
        assert term.table_scale is not None
        rows, x_scale = (k_rows, k_scale) if term.keys else (q_rows, q_scale)
        table = quantize_int8(term.table[head], term.table_scale)
        factor = attention_score_scale(op_scale, x_scale, term.table_scale)
        source = dequantize(int_matmul(rows, table.T), np.full(table.shape[0], factor, np.float32),
                            None)
        scores = gather_add(scores, source, term.index, term.keys)
    return scores
