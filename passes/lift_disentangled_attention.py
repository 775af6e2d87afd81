"""DeBERTa's disentangled attention in the attention lift (`lift_attention.py`): the position
terms added to the scores become the attention op's c2p / p2c operands (docs/design.md 3.3).

Recognised, as the additive term of the scores Q K^T (an Add tree whose leaves are):

    x [B*H, L, d] -MatMul(T)-> [B*H, L, P] -GatherElements(axis -1, I)-> [B*H, L, L']
        [-Transpose(0, 2, 1)] [Mul/Div by scalar constants]

with T [B*H, d, P] and I constants (the frontend folds the position embeddings' LayerNorm,
their projection by the key / query weights and the relative-position buckets into them),
and constant all-zero addends (`score = 0; score += ...`). Without the transpose the term is
content-to-position (x must be Q's heads); with it position-to-content (x is K's heads, the
gather picks by key row). Each head's table is T's block, stored [H, P, d]; the index is one
[Lq, Lk] table (every batch and head block must be the same); the term's scalar factors,
relative to the attention's scale, are folded into the table, and the table keeps only the
positions the index reads (the GEMM's work). A term that is none of this keeps the attention
on the host with one line naming what differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_attention_heads import HEAD_SPLIT_PERM, HeadSplit, split_heads
from esact_cc.passes.lift_transformer_graph import (
    NoMatch,
    OnnxGraph,
    fmt_shape,
    location_name,
    require,
    shape_of,
)
from xdsl.ir import Operation, SSAValue

_SWAPS = ((0, 2, 1), (0, 1, 3, 2))
"""Transposes swapping the scores' last two axes (3-D flat, 4-D)."""


@dataclass
class PositionTermMatch:
    """One c2p / p2c term found on the scores."""

    x: SSAValue
    """The per-head operand the GEMM reads ([B*H, L, d] or [B, H, L, d])."""
    table: np.ndarray
    """The GEMM's constant right operand, [..., d, P]."""
    index: np.ndarray
    """The gather's constant index, [..., L, L']."""
    keys: bool
    """Transposed (p2c): x is K's heads and the gather picks by key."""
    factor: float
    node: str
    """The GatherElements' node name (messages)."""

    @property
    def name(self) -> str:
        return "p2c" if self.keys else "c2p"


def match_position_terms(value: SSAValue, graph: OnnxGraph, full_shape: tuple[int, ...],
                         product: Operation, where: str) -> list[PositionTermMatch]:
    """The position terms whose sum is `value` (module doc), or NoMatch naming the near miss
    (`product`: the activation MatMul that made `value` content dependent)."""
    try:
        terms: list[PositionTermMatch] = []
        _collect(value, graph, full_shape, terms, 1.0, False)
    except NoMatch as miss:
        raise NoMatch(
            f"{where}: the scores add a term computed from activations by "
            f"{location_name(product)} that is not a disentangled position term (a "
            f"GatherElements of a MatMul by a constant position table): {miss}") from None
    kinds = [t.name for t in terms]
    require(len(set(kinds)) == len(kinds),
            f"{where}: the scores add {len(kinds)} position terms {kinds}, at most one c2p and "
            "one p2c")
    return terms


def _collect(value: SSAValue, graph: OnnxGraph, full_shape: tuple[int, ...],
             terms: list[PositionTermMatch], factor: float, swapped: bool) -> None:
    op = graph.producer(value)
    require(op is not None, "it comes from outside the onnx dialect")
    assert op is not None
    graph.require_single_use(value, f"the position term at {location_name(op)}")
    kind = op.op_type
    if kind == "Add":  # every op here is linear: factor and transpose distribute
        for operand in op.operands:
            constant = graph.const(operand)
            if constant is None:
                _collect(operand, graph, full_shape, terms, factor, swapped)
            else:
                require(not np.any(constant), f"{location_name(op)} adds a nonzero constant")
        return
    if kind in ("Mul", "Div"):
        inner, scalar = graph.split_const(op, f"position term scale {kind}")
        require(scalar != 0 and np.isfinite(scalar), f"position term scale {scalar}")
        _collect(inner, graph, full_shape, terms, factor * (scalar if kind == "Mul" else
                                                            1.0 / scalar), swapped)
        return
    if kind == "Transpose":
        perm = tuple(int(i) for i in graph.attrs(op).get("perm", ()))
        require(perm in _SWAPS and not swapped,
                f"{location_name(op)} transposes the term by {list(perm)}")
        _collect(op.operands[0], graph, full_shape, terms, factor, True)
        return
    require(kind == "GatherElements", f"it passes through onnx.{kind} ({location_name(op)})")
    terms.append(_gather_term(op, graph, full_shape, factor, swapped))


def _gather_term(op: OnnxOperation, graph: OnnxGraph, full_shape: tuple[int, ...],
                 factor: float, keys: bool) -> PositionTermMatch:
    node = location_name(op)
    data, index_value = op.operands
    rank = len(shape_of(data))
    require(int(graph.attrs(op).get("axis", 0)) % rank == rank - 1,
            f"{node} gathers along axis {graph.attrs(op).get('axis', 0)}, not the last")
    index = graph.const(index_value)
    require(index is not None, f"{node}'s index is not a constant")
    assert index is not None
    graph.require_single_use(data, f"the position scores gathered by {node}")
    matmul = graph.producer(data, "MatMul")
    require(matmul is not None, f"{node} gathers from no MatMul")
    assert matmul is not None
    x, table_value = matmul.operands
    table = graph.const(table_value)
    require(table is not None and not graph.is_const(x),
            f"{location_name(matmul)} is not activations times a constant position table")
    assert table is not None
    expected = (*full_shape[:-2], *reversed(full_shape[-2:])) if keys else full_shape
    require(shape_of(op.results[0]) == expected,
            f"{node} gives {fmt_shape(shape_of(op.results[0]))}, expected {fmt_shape(expected)}")
    return PositionTermMatch(x, table, np.asarray(index), keys, factor, node)


def split_term_heads(term: PositionTermMatch, graph: OnnxGraph) -> HeadSplit:
    """The head split of the term's operand (its source must be Q's or K's)."""
    return split_heads(term.x, graph, HEAD_SPLIT_PERM, f"{term.name} term's", shared=term.x)


def resolve_position_terms(terms: list[PositionTermMatch], graph: OnnxGraph, qs: HeadSplit,
                           ks: HeadSplit, scale: float, heads: int, lq: int, lk: int,
                           where: str) -> dict[str, np.ndarray]:
    """The op's tables ([H, P, d], factors folded) and indices ([Lq, Lk] int32) by operand
    name, every check done (NoMatch on a miss)."""
    arrays: dict[str, np.ndarray] = {}
    for term in terms:
        reads, read_name = (ks, "K") if term.keys else (qs, "Q")
        require(term.x.uses.get_length() == 2, f"{where}: the {term.name} term's operand has "
                f"{term.x.uses.get_length()} uses, expected the scores' and the term's")
        xs = split_term_heads(term, graph)
        require(xs.source is reads.source and xs.columns is None and reads.columns is None
                and xs.rotary is None and reads.rotary is None and xs.repeat == reads.repeat == 1
                and xs.heads == heads,
                f"{where}: the {term.name} term ({term.node}) does not read {read_name}'s "
                f"{heads} heads as the scores do")
        table = _head_tables(term, heads, term.factor * xs.scale / scale, where)
        index = _index_table(term, lq, lk, table.shape[1], where)
        # Only the positions some score reads: at 128 tokens DeBERTa-v3's 512 are 255.
        first, last = int(index.min()), int(index.max())
        arrays[f"{term.name}_table"] = np.ascontiguousarray(table[:, first:last + 1])
        arrays[f"{term.name}_index"] = (index - first).astype(np.int32)
    return arrays


def _head_tables(term: PositionTermMatch, heads: int, ratio: float, where: str) -> np.ndarray:
    """[H, P, d] FP32: the table's per-head blocks (the same for every batch element)."""
    *lead, d, positions = term.table.shape
    count = int(np.prod(lead)) if lead else 1
    require(count % heads == 0, f"{where}: the {term.name} table {fmt_shape(term.table.shape)} "
            f"is not per head ({heads} heads)")
    blocks = np.asarray(term.table, np.float32).reshape(count // heads, heads, d, positions)
    require(bool(np.all(blocks == blocks[:1])), f"{where}: the {term.name} table differs "
            "between batch elements")
    table = np.ascontiguousarray(blocks[0].transpose(0, 2, 1))
    return table if ratio == 1.0 else (table * np.float32(ratio)).astype(np.float32)


def _index_table(term: PositionTermMatch, lq: int, lk: int, positions: int,
                 where: str) -> np.ndarray:
    """[Lq, Lk] int32: the gather index of score (i, j), in [0, P)."""
    rows, cols = (lk, lq) if term.keys else (lq, lk)
    index = term.index
    require(index.ndim >= 2 and index.shape[-2:] == (rows, cols),
            f"{where}: the {term.name} index {fmt_shape(index.shape)} is not [.., {rows}, {cols}]")
    flat = index.reshape(-1, rows, cols)
    require(bool(np.all(flat == flat[:1])), f"{where}: the {term.name} index differs between "
            "batch elements or heads")
    table = flat[0].astype(np.int64)
    require(bool(np.all((table >= -positions) & (table < positions))),
            f"{where}: the {term.name} index leaves [-{positions}, {positions})")
    table = np.where(table < 0, table + positions, table)  # GatherElements' negative indices
    return np.ascontiguousarray((table.T if term.keys else table).astype(np.int32))
