"""Instruction selection of an attention's disentangled position scores (DeBERTa's c2p / p2c,
docs/design.md section 3.3), called by `lower_attention.py` for each head and query tile
between the scores' DEQUANT and the softmax.

Per term: LOAD the head's INT8 position table [P, d] into ABUF, ATTN_QK of the tile's INT8 Q
rows (c2p) or of the keys' INT8 K rows (p2c), already in ABUF for Q K^T, against it on the MAC
array ([rows, P] INT32), DEQUANT with scale * x_scale * table_scale into VBUF, LOAD the int16
index rows into MBUF, GATHER_ADD into the FP32 scores (in blocks of rows or keys that fit) (c2p, then p2c: the order the INT8
interpreter adds them, `interpret_position_scores`). Constants made once per op: the INT8
tables, the DEQUANT factor rows and the index tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.dialects.gemm_ops import POSITION_TERMS
from esact_cc.ir_queries import op_label
from esact_cc.passes.lowering_state import HALF, DramTensor, Lowering
from esact_cc.quantized_kernels import attention_score_scale, quantize_int8
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from esact_cc.runtime.isa_disentangled import INDEX_BYTES

INT16_LIMIT = 2 ** 15
"""Indices (positions) must fit GATHER_ADD's int16 index elements."""


@dataclass
class _Term:
    keys: bool
    table: DramTensor
    """INT8 [H, P, d]."""
    index: DramTensor
    """[Lq, 2 * Lk] bytes: int16 little endian."""
    positions: int
    factor: int
    """VBUF address of the DEQUANT factor row [P]."""


class PositionScores:
    """The position terms of one attention op (none: nothing is emitted): constants placed,
    factor rows loaded."""

    def __init__(self, lw: Lowering, op: transformer.AttentionOp, lk: int, d: int):
        self.lw, self.lk, self.d = lw, lk, d
        self.terms: list[_Term] = []
        if not op.has_positions:
            return
        op_scale, (q_scale, k_scale, _, _) = op.scale.value.data, op.int8_scales()  # type: ignore[misc]
        for name in POSITION_TERMS:
            table_value = getattr(op, f"{name}_table")
            if table_value is None:
                continue
            keys = name == "p2c"
            table = lw.weight_array(table_value, f"{name}_table")
            index = lw.weight_array(getattr(op, f"{name}_index"), f"{name}_index")
            heads, positions, _ = table.shape
            if positions >= INT16_LIMIT:
                raise CompileError(f"{op_label(op)}: {name}_table has {positions} positions, "
                                   f"GATHER_ADD indexes at most {INT16_LIMIT}")
            table_scale = getattr(op, f"{name}_scale").value.data
            factor = attention_score_scale(op_scale, k_scale if keys else q_scale, table_scale)
            factor_row = lw.constant(f"attention.{name}_factor",
                                     np.full(positions, factor, np.float32),
                                     (f"{name}_factor", positions, float(factor)))
            address = lw.alloc(Buffer.VBUF, positions)
            lw.load(Buffer.VBUF, address, factor_row.address, 1, positions)
            self.terms.append(_Term(
                keys,
                lw.constant(f"attention.{name}_table", quantize_int8(table, table_scale)),
                lw.constant(f"attention.{name}_index",
                            np.ascontiguousarray(index.astype("<i2")).view(np.uint8)),
                positions, address))

    def add(self, scores: int, h: int, r0: int, tq: int, k0: int, n: int,
            q_rows: tuple[int, int], k_rows: tuple[int, int]) -> None:
        """Add head h's terms to the FP32 scores (VBUF, [tq, n], packed) of query rows
        [r0, r0 + tq) and keys [k0, k0 + n); q_rows / k_rows: (ABUF address, row stride) of
        those Q and K rows of the head. c2p runs per block of query rows, p2c per block of
        keys (its gather reads a key's row for every query), each block's products, DEQUANT
        rows and index rows sized to what ACC, VBUF and MBUF have free."""
        for term in self.terms:
            table = self.lw.alloc(Buffer.ABUF, term.positions * self.d)
            self.lw.load(Buffer.ABUF, table, term.table.address + h * term.positions * self.d,
                         term.positions, self.d)
            x_addr, x_stride = k_rows if term.keys else q_rows
            for b0, size in _blocks(n if term.keys else tq, self._source_rows(term.positions)):
                source = self._source(term, table, x_addr + b0 * x_stride, x_stride, size)
                if term.keys:  # keys [b0, b0 + size): every query row, in index-sized blocks
                    for i0, rows in _blocks(tq, self._index_rows(size)):
                        self._gather(term, scores + i0 * n + b0, n, source, r0 + i0, rows,
                                     k0 + b0, size)
                else:  # query rows [b0, b0 + size) over all n keys
                    for i0, rows in _blocks(size, self._index_rows(n)):
                        self._gather(term, scores + (b0 + i0) * n, n, source + i0 * term.positions,
                                     r0 + b0 + i0, rows, k0, n)
                self.lw.free(Buffer.VBUF, source)
            self.lw.free(Buffer.ABUF, table)

    def _source_rows(self, positions: int) -> int:
        """Rows of products one block may take: an ACC bank (a [rows, P] INT32 tile) and half
        the free VBUF (its FP32 DEQUANT)."""
        acc, vbuf = self.lw.capacity(Buffer.ACC) // HALF, self.lw.room(Buffer.VBUF) // HALF
        return min(acc, vbuf) // positions

    def _index_rows(self, cols: int) -> int:
        """Index rows of `cols` int16 elements half the free MBUF holds."""
        return self.lw.room(Buffer.MBUF) // HALF // (INDEX_BYTES * cols)

    def _source(self, term: _Term, table: int, x_addr: int, x_stride: int, rows: int) -> int:
        """ATTN_QK of `rows` INT8 rows at x_addr against the head's table, DEQUANT into a new
        VBUF block [rows, P]: its address."""
        lw, p = self.lw, term.positions
        acc = lw.alloc(Buffer.ACC, rows * p)
        lw.emit("attn_qk", "qk", scores_addr=acc, q_addr=x_addr, k_addr=table, lq=rows, lk=p,
                d=self.d, q_stride=x_stride, k_stride=self.d)
        source = lw.alloc(Buffer.VBUF, rows * p)
        lw.emit("dequant", "sfu", dst_addr=source, src_addr=acc, rows=rows, cols=p,
                scale_addr=term.factor)
        lw.free(Buffer.ACC, acc)
        return source

    def _gather(self, term: _Term, dst: int, dst_stride: int, source: int, row: int, rows: int,
                key: int, keys: int) -> None:
        """LOAD the index of query rows [row, row + rows) and keys [key, key + keys), then
        GATHER_ADD from `source` into dst."""
        lw = self.lw
        index = lw.alloc(Buffer.MBUF, rows * INDEX_BYTES * keys)
        lw.load(Buffer.MBUF, index, term.index.address + (row * self.lk + key) * INDEX_BYTES,
                rows, INDEX_BYTES * keys, dram_stride=INDEX_BYTES * self.lk)
        lw.emit("gather_add", "sfu", dst_addr=dst, src_addr=source, idx_addr=index, rows=rows,
                cols=keys, src_cols=term.positions, dst_stride=dst_stride,
                transposed=int(term.keys))
        lw.free(Buffer.MBUF, index)

    def free(self) -> None:
        self.lw.free(Buffer.VBUF, *(term.factor for term in self.terms))


def _blocks(total: int, size: int) -> list[tuple[int, int]]:
    """(start, length) blocks of at most `size` (at least 1) covering [0, total)."""
    size = max(1, min(total, size))
    return [(start, min(size, total - start)) for start in range(0, total, size)]
