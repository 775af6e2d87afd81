"""The ESACT instruction table, `INSTRUCTION_SPECS`: every instruction's row (opcode, fields,
queue, unit, operands, cost, semantics), the buffers each buffer field may name, the import-time
consistency checks, and `register_instruction`, the one way to extend the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .isa_costs import (
    SFU_PASSES,
    CostFn,
    bpu_cost,
    dma_cost,
    host_cost,
    mac_sparse_cost,
    mac_tile_cost,
    sfu_cost,
    topk_cost,
    unit_cost,
)
from .isa_fields import (
    BUFFER_DTYPES,
    DIM_BITS,
    DRAM_ADDR_BITS,
    DRAM_STRIDE_BITS,
    FLOAT_BITS,
    INSTRUCTION_BITS,
    OPCODE_BITS,
    SRAM_ADDR_BITS,
    STRIDE_BITS,
    TOKEN_MASK_BITS,
    Buffer,
    FieldKind,
    FieldSpec,
    GeluMode,
    Queue,
    SimilarityMode,
    Unit,
)
from . import spls_kernels
from .isa_spec import InstructionSpec, Operand


# ----------------------------------------------------------------------------- field helpers

COMMON_FIELDS = (
    FieldSpec("pop", TOKEN_MASK_BITS, FieldKind.QUEUE_MASK,
              doc="queues to pop one token from (channel q -> own queue) before starting"),
    FieldSpec("push", TOKEN_MASK_BITS, FieldKind.QUEUE_MASK,
              doc="queues to push one token to (channel own queue -> q) when finished"),
)


def _addr(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, SRAM_ADDR_BITS, doc=doc or "buffer address in elements")


def _dim(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, DIM_BITS, min_value=1, doc=doc)


def _stride(name: str) -> FieldSpec:
    return FieldSpec(name, STRIDE_BITS, doc="row stride in elements, 0 = packed")


def _flag(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, 1, FieldKind.FLAG, doc=doc)


def _float(name: str, doc: str = "") -> FieldSpec:
    return FieldSpec(name, FLOAT_BITS, FieldKind.FLOAT32, doc=doc)


def _buf(name: str, allowed: tuple[Buffer, ...]) -> FieldSpec:
    # min/max are checked generically; membership in `allowed` by ALLOWED_BUFFERS below.
    return FieldSpec(name, 3, FieldKind.ENUM, enum=Buffer,
                     doc="buffer: " + "|".join(b.name for b in allowed))


def _f(name: str) -> Callable[[Mapping[str, int]], int]:
    return lambda f: f[name]


def _const(value: int) -> Callable[[Mapping[str, int]], int]:
    return lambda f: value


def similarity_rows(f: Mapping[str, int]) -> int:
    """Rows one SIMILARITY instruction decides: row_count, 0 = from first_row to the end."""
    return f["row_count"] or max(0, f["length"] - f["first_row"])


def similarity_spa_rows(f: Mapping[str, int]) -> int:
    """SPA / prob rows per head one SIMILARITY reads: all rows, or the chunk's with a ring."""
    return similarity_rows(f) if f["has_ring"] else f["length"]


def similarity_ring_rows(f: Mapping[str, int], mode: SimilarityMode) -> int:
    """Slots of the SIMILARITY reference ring in the buffer `mode` keeps it in, else 0."""
    if not f["has_ring"] or f["mode"] != mode:
        return 0
    return spls_kernels.ring_slots(f["window"], f["length"])


# ----------------------------------------------------------------------------- operands


def _mat(addr: str, buffer: Buffer | str, rows: str, cols: str, access: str,
         stride: str | None = None, enabled_by: str | None = None) -> Operand:
    return Operand(addr, buffer, _f(rows), _f(cols), access, stride, enabled_by)


def _vec(addr: str, buffer: Buffer, length: str, access: str = "r",
         enabled_by: str | None = None) -> Operand:
    return Operand(addr, buffer, _const(1), _f(length), access, None, enabled_by)


def _elem_bytes(f: Mapping[str, int]) -> int:
    return BUFFER_DTYPES[Buffer(f["buf"])].itemsize


_DMA_FIELDS = (
    _buf("buf", tuple(Buffer)),
    _addr("sram_addr"),
    FieldSpec("dram_addr", DRAM_ADDR_BITS, doc="DRAM byte address"),
    _dim("rows"),
    _dim("cols", "elements of the buffer's dtype per row"),
    _stride("sram_stride"),
    FieldSpec("dram_stride", DRAM_STRIDE_BITS, doc="DRAM row stride in bytes, 0 = packed"),
)


def _dma_operands(sram_access: str, dram_access: str) -> tuple[Operand, ...]:
    return (
        Operand("sram_addr", "buf", _f("rows"), _f("cols"), sram_access, "sram_stride"),
        Operand("dram_addr", None, _f("rows"), lambda f: f["cols"] * _elem_bytes(f),
                dram_access, "dram_stride"),
    )


_ROWWISE = (_dim("rows"), _dim("cols"), _stride("src_stride"), _stride("dst_stride"))


def _rowwise_operands(src: Buffer | str, dst: Buffer | str) -> tuple[Operand, ...]:
    return (_mat("src_addr", src, "rows", "cols", "r", "src_stride"),
            _mat("dst_addr", dst, "rows", "cols", "w", "dst_stride"))


_ROW_MASK = (_flag("has_row_mask", "process only the rows the row mask keeps"),
             _addr("row_mask_addr", "MBUF: rows bytes, nonzero = row processed"))
"""An SFU step's row mask (SPLS row reuse): the steps after a row-masked GEMM or attention
run on its kept rows only; a dropped row is neither read nor written (docs/design.md 6.3)."""
_ROW_MASK_OPERAND = _vec("row_mask_addr", Buffer.MBUF, "rows", enabled_by="has_row_mask")
_ROW_MASK_SEMANTICS = """ With has_row_mask, only the rows whose row_mask byte is nonzero are
    read, computed and written; the others of dst are left as they are."""


def _spec(name: str, opcode: int, queue: Queue, unit: Unit, fields: tuple[FieldSpec, ...],
          operands: tuple[Operand, ...], cost: CostFn, semantics: str) -> InstructionSpec:
    return InstructionSpec(name, opcode, queue, unit, COMMON_FIELDS + fields, operands,
                           " ".join(semantics.split()), cost)


_SPECS: tuple[InstructionSpec, ...] = (
    # ------------------------------------------------------------------ DMA
    _spec("load", 0x01, Queue.LOAD, Unit.DMA, _DMA_FIELDS, _dma_operands("w", "r"), dma_cost,
          """2-D strided copy DRAM -> buffer `buf`: row r of `cols` elements (buffer dtype,
          little endian) from dram_addr + r * dram_stride to sram_addr + r * sram_stride."""),
    _spec("store", 0x02, Queue.STORE, Unit.DMA, _DMA_FIELDS, _dma_operands("r", "w"), dma_cost,
          """2-D strided copy buffer `buf` -> DRAM, the inverse of load."""),
    # ------------------------------------------------------------------ MAC array
    _spec("gemm", 0x10, Queue.COMPUTE, Unit.MAC, (
        _addr("acc_addr", "ACC: output M x N int32"),
        _addr("a_addr", "ABUF: A, M x K int8"),
        _addr("w_addr", "WBUF: W, K x N int8"),
        _dim("m"), _dim("k"), _dim("n"),
        _stride("a_stride"), _stride("w_stride"), _stride("acc_stride"),
        _flag("accumulate", "add to the existing ACC values instead of overwriting"),
        _flag("has_bias"), _addr("bias_addr", "ACC: int32 bias vector of N"),
        _flag("has_row_mask"), _addr("row_mask_addr", "MBUF: M bytes"),
        _flag("has_col_mask"), _addr("col_mask_addr", "MBUF: N bytes"),
    ), (
        _mat("a_addr", Buffer.ABUF, "m", "k", "r", "a_stride"),
        _mat("w_addr", Buffer.WBUF, "k", "n", "r", "w_stride"),
        _mat("acc_addr", Buffer.ACC, "m", "n", "w", "acc_stride"),
        _vec("bias_addr", Buffer.ACC, "n", enabled_by="has_bias"),
        _vec("row_mask_addr", Buffer.MBUF, "m", enabled_by="has_row_mask"),
        _vec("col_mask_addr", Buffer.MBUF, "n", enabled_by="has_col_mask"),
    ), mac_tile_cost,
        """INT8 x INT8 -> INT32: for every row i the row mask keeps and column j the column
        mask keeps, acc[i, j] = (accumulate ? acc[i, j] : 0) + sum_k A[i, k] W[k, j]
        (+ bias[j] if has_bias), int32 wrap-around. Dropped rows/columns are neither computed
        nor written."""),
    _spec("attn_qk", 0x11, Queue.COMPUTE, Unit.MAC, (
        _addr("scores_addr", "ACC: Lq x Lk int32"),
        _addr("q_addr", "ABUF: Q, Lq x d int8"),
        _addr("k_addr", "ABUF: K, Lk x d int8"),
        _dim("lq"), _dim("lk"), _dim("d"),
        _stride("q_stride"), _stride("k_stride"), _stride("scores_stride"),
        _flag("has_mask"), _addr("mask_addr", "MBUF: Lq x Lk element mask, packed"),
        # SPLS row reuse (added for the sparse lowering): reused query rows skip QK.
        _flag("has_row_mask"), _addr("row_mask_addr", "MBUF: Lq bytes"),
    ), (
        _mat("q_addr", Buffer.ABUF, "lq", "d", "r", "q_stride"),
        _mat("k_addr", Buffer.ABUF, "lk", "d", "r", "k_stride"),
        _mat("scores_addr", Buffer.ACC, "lq", "lk", "w", "scores_stride"),
        _mat("mask_addr", Buffer.MBUF, "lq", "lk", "r", enabled_by="has_mask"),
        _vec("row_mask_addr", Buffer.MBUF, "lq", enabled_by="has_row_mask"),
    ), mac_sparse_cost,
        """Masked scores: for every row i the row mask keeps, scores[i, j] = sum_d Q[i, d]
        K[j, d] where the element mask selects (i, j) (every position without a mask), else 0
        (int32, wrap-around); rows the row mask drops are neither computed nor written. Only
        selected dot products of kept rows are executed. Per head: point q/k at the head's
        column block with the full row stride."""),
    _spec("attn_pv", 0x12, Queue.COMPUTE, Unit.MAC, (
        _addr("out_addr", "ACC: Lq x d int32"),
        _addr("p_addr", "ABUF: P, Lq x Lk int8"),
        _addr("v_addr", "ABUF: V, Lk x d int8"),
        _dim("lq"), _dim("lk"), _dim("d"),
        _stride("p_stride"), _stride("v_stride"), _stride("out_stride"),
        _flag("accumulate"),
        _flag("has_mask"), _addr("mask_addr", "MBUF: Lq x Lk element mask, packed"),
        _flag("has_row_mask"), _addr("row_mask_addr", "MBUF: Lq bytes"),
    ), (
        _mat("p_addr", Buffer.ABUF, "lq", "lk", "r", "p_stride"),
        _mat("v_addr", Buffer.ABUF, "lk", "d", "r", "v_stride"),
        _mat("out_addr", Buffer.ACC, "lq", "d", "w", "out_stride"),
        _mat("mask_addr", Buffer.MBUF, "lq", "lk", "r", enabled_by="has_mask"),
        _vec("row_mask_addr", Buffer.MBUF, "lq", enabled_by="has_row_mask"),
    ), mac_sparse_cost,
        """Sparse P x V: for every row i the row mask keeps, out[i, :] = (accumulate ?
        out[i, :] : 0) + sum_j P'[i, j] V[j, :] where P' = P with entries the element mask
        drops taken as 0 (int32, wrap-around). Dropped rows are not written. Executed MACs =
        selected entries of kept rows x d."""),
    # ------------------------------------------------------------------ SFU
    _spec("dequant", 0x20, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "ACC int32"), *_ROWWISE,
        _addr("scale_addr", "VBUF: per-column scale vector of cols"),
        _flag("has_bias"), _addr("bias_addr", "VBUF: per-column bias vector of cols"),
        FieldSpec("scalar_count", 2, doc="number of VBUF scalars multiplied in (0-3)"),
        _addr("scalar_addr", "VBUF: scalar_count consecutive scalars (e.g. dynamic HLog scales)"),
        _flag("has_row_scale", "multiply row r by row_scale[r] (QUANT_ROWS' per-token scales)"),
        _addr("row_scale_addr", "VBUF: per-row scale vector of rows"), *_ROW_MASK,
    ), (*_rowwise_operands(Buffer.ACC, Buffer.VBUF),
        _vec("scale_addr", Buffer.VBUF, "cols"),
        _vec("bias_addr", Buffer.VBUF, "cols", enabled_by="has_bias"),
        Operand("scalar_addr", Buffer.VBUF, _const(1), _f("scalar_count"), "r"),
        _vec("row_scale_addr", Buffer.VBUF, "rows", enabled_by="has_row_scale"),
        _ROW_MASK_OPERAND), sfu_cost(1),
        """dst[r, c] = float32(src[r, c] * scale[c] * (row_scale[r] if has_row_scale) *
        prod(vbuf[scalar_addr + i] for i < scalar_count) + (bias[c] if has_bias)), computed
        in float64 in that order (the row factor is the lane's second multiplier: no extra
        pass).""" + _ROW_MASK_SEMANTICS),
    _spec("requant", 0x21, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "ABUF int8"), _addr("src_addr", "ACC int32"), *_ROWWISE,
        _addr("mult_addr", "VBUF: per-column multiplier vector of cols"),
    ), (*_rowwise_operands(Buffer.ACC, Buffer.ABUF),
        _vec("mult_addr", Buffer.VBUF, "cols")), sfu_cost(1),
        """dst[r, c] = clip(round_half_even(src[r, c] * mult[c]), -127, 127) as int8, the
        product in float64; NaN gives 0."""),
    _spec("quant", 0x22, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "ABUF int8"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _float("mult", "per-tensor multiplier (1 / scale)"), *_ROW_MASK,
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.ABUF), _ROW_MASK_OPERAND), sfu_cost(1),
        """dst[r, c] = clip(round_half_even(src[r, c] * mult), -127, 127) as int8, the product
        in float64; NaN gives 0.""" + _ROW_MASK_SEMANTICS),
    _spec("softmax", 0x23, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _float("scale", "logits multiplier, e.g. 1/sqrt(d_head)"),
        _flag("has_add_mask"), _addr("add_mask_addr", "VBUF: additive row vector of cols"),
        _flag("causal"),
        FieldSpec("causal_offset", 16, FieldKind.SINT,
                  doc="causal: column c is masked when c > r + causal_offset"),
        _flag("has_elem_mask"), _addr("elem_mask_addr", "MBUF: rows x cols, packed"),
        *_ROW_MASK,
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.VBUF),
        _vec("add_mask_addr", Buffer.VBUF, "cols", enabled_by="has_add_mask"),
        _mat("elem_mask_addr", Buffer.MBUF, "rows", "cols", "r", enabled_by="has_elem_mask"),
        _ROW_MASK_OPERAND), sfu_cost(SFU_PASSES["softmax"]),
        """Row softmax in float64: z = src * scale (with the mask, float32(z + add_mask[c]), as
        ADD rounds: a per-query mask ADDed before gives the same z); positions the causal rule
        or the element mask exclude are -inf; dst = exp(z - max) / sum, excluded positions 0,
        a row with no valid position all 0; max and sum are the running max and sum over
        chunks of 64 keys of runtime/online_softmax.py (what key blocks
        reproduce).""" + _ROW_MASK_SEMANTICS),
    _spec("layernorm", 0x24, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _addr("gamma_addr", "VBUF: cols"), _addr("beta_addr", "VBUF: cols"),
        _float("eps"),
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.VBUF),
        _vec("gamma_addr", Buffer.VBUF, "cols"), _vec("beta_addr", Buffer.VBUF, "cols")),
        sfu_cost(SFU_PASSES["layernorm"]),
        """Per row in float64: mean, biased variance; dst = (x - mean) / sqrt(var + eps) *
        gamma + beta."""),
    _spec("gelu", 0x25, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        FieldSpec("mode", 1, FieldKind.ENUM, enum=GeluMode), *_ROW_MASK,
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.VBUF), _ROW_MASK_OPERAND),
        sfu_cost(SFU_PASSES["gelu"]),
        """dst = GELU(src) in float64: ERF 0.5 x (1 + erf(x / sqrt 2)); TANH 0.5 x (1 +
        tanh(sqrt(2 / pi) (x + 0.044715 x^3))).""" + _ROW_MASK_SEMANTICS),
    _spec("add", 0x26, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("a_addr", "VBUF fp32"), _addr("b_addr", "VBUF fp32"),
        _dim("rows"), _dim("cols"),
        _stride("dst_stride"), _stride("a_stride"), _stride("b_stride"), *_ROW_MASK,
    ), (_mat("a_addr", Buffer.VBUF, "rows", "cols", "r", "a_stride"),
        _mat("b_addr", Buffer.VBUF, "rows", "cols", "r", "b_stride"),
        _mat("dst_addr", Buffer.VBUF, "rows", "cols", "w", "dst_stride"), _ROW_MASK_OPERAND),
        sfu_cost(1),
        """dst = float32(a + b) (residual add).""" + _ROW_MASK_SEMANTICS),
    _spec("gather_rows", 0x27, Queue.SFU, Unit.SFU, (
        _buf("buf", (Buffer.ABUF, Buffer.ACC, Buffer.VBUF)),
        _addr("dst_addr"), _addr("src_addr"), *_ROWWISE,
        _addr("map_addr", "MBUF: reuse map, rows little-endian int16"),
    ), (_mat("src_addr", "buf", "rows", "cols", "r", "src_stride"),
        _mat("dst_addr", "buf", "rows", "cols", "w", "dst_stride"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * f["rows"], "r")),
        sfu_cost(1),
        """Compact: with c_0 < c_1 < ... the computed rows (map == -1), dst row j = src row c_j
        for j < number of computed rows; later dst rows are unchanged."""),
    _spec("scatter_rows", 0x28, Queue.SFU, Unit.SFU, (
        _buf("buf", (Buffer.ABUF, Buffer.ACC, Buffer.VBUF)),
        _addr("dst_addr"), _addr("src_addr"), *_ROWWISE,
        _addr("map_addr", "MBUF: reuse map, rows little-endian int16"),
        _flag("compact", "src holds only the computed rows, in order (gather_rows output)"),
    ), (_mat("src_addr", "buf", "rows", "cols", "r", "src_stride"),
        _mat("dst_addr", "buf", "rows", "cols", "w", "dst_stride"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * f["rows"], "r")),
        sfu_cost(1),
        """Expand: rep(i) = i if map[i] == -1 else map[i]; dst row i = src row rep(i)
        (compact = 0) or src row (position of rep(i) among the computed rows) (compact = 1):
        a reused row takes its representative's values. map[i] must be -1 or a computed row
        < i."""),
    # ------------------------------------------------------------------ SPLS (predict queue)
    _spec("hlog", 0x30, Queue.PREDICT, Unit.BPU, (
        _buf("dst_buf", (Buffer.ABUF, Buffer.WBUF, Buffer.ACC)),
        _addr("dst_addr"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        FieldSpec("bits", 5, min_value=2, max_value=16,
                  doc="HLog bits (int8 buffers hold bits <= 7, ACC up to 16)"),
        _float("scale", "fixed per-tensor scale (used when dynamic = 0)"),
        _flag("dynamic", "scale = max|src| / 2^(bits-1) over this tile (spls_kernels.hlog_scale)"),
        _addr("scale_out_addr", "VBUF: the scale used is written here when dynamic = 1"),
        # Long sequences: a per-tensor scale from the scales of its row tiles.
        FieldSpec("scale_count", DIM_BITS, doc="dynamic = 0: scale = max of this many FP32 "
                  "tile scales at scale_in_addr (0 = the scale field)"),
        _addr("scale_in_addr", "VBUF: tile scales read when scale_count > 0"),
    ), (*_rowwise_operands(Buffer.VBUF, "dst_buf"),
        _vec("scale_out_addr", Buffer.VBUF, "dynamic", "w", enabled_by="dynamic"),
        _vec("scale_in_addr", Buffer.VBUF, "scale_count", "r"),
        Operand("scale_out_addr", Buffer.VBUF, _const(1),
                lambda f: 0 if f["dynamic"] else min(1, f["scale_count"]), "w")),
        bpu_cost,
        """dst = spls_kernels.hlog_quantize(src, bits, scale): signed HLog level values
        (docs/design.md section 6 step 1). scale: dynamic = 1: max|src| / 2^(bits-1) over this
        tile, written to scale_out_addr; else scale_count > 0: the max of the scale_count
        FP32 values at scale_in_addr (tile scales of one tensor's row tiles: their max is the
        tensor's dynamic scale), written to scale_out_addr; else the scale field."""),
    _spec("bpu", 0x31, Queue.PREDICT, Unit.BPU, (
        _addr("dst_addr", "ACC int32: M x N"),
        _buf("a_buf", (Buffer.ABUF, Buffer.WBUF, Buffer.ACC)), _addr("a_addr", "M x K levels"),
        _buf("b_buf", (Buffer.ABUF, Buffer.WBUF, Buffer.ACC)),
        _addr("b_addr", "K x N levels (N x K if transpose_b)"),
        _dim("m"), _dim("k"), _dim("n"),
        _stride("a_stride"), _stride("b_stride"), _stride("dst_stride"),
        _flag("transpose_b", "B is stored N x K (e.g. K^ rows for Q^ K^T)"),
    ), (_mat("a_addr", "a_buf", "m", "k", "r", "a_stride"),
        Operand("b_addr", "b_buf", lambda f: f["n"] if f["transpose_b"] else f["k"],
                lambda f: f["k"] if f["transpose_b"] else f["n"], "r", "b_stride"),
        _mat("dst_addr", Buffer.ACC, "m", "n", "w", "dst_stride")), bpu_cost,
        """dst = spls_kernels.hlog_matmul(A, B) (shift-add product of HLog level matrices),
        saturated to int32. Operands must hold HLog levels."""),
    _spec("topk", 0x32, Queue.PREDICT, Unit.TOPK, (
        _addr("dst_addr", "MBUF: rows x cols mask, packed"),
        _buf("src_buf", (Buffer.ACC, Buffer.VBUF)), _addr("src_addr", "scores rows x cols"),
        _dim("rows"), _dim("cols"), _stride("src_stride"),
        _dim("k"),
        _flag("has_key_mask"), _addr("key_mask_addr", "MBUF: cols bytes, nonzero = valid key"),
        _flag("causal"),
        FieldSpec("causal_offset", 16, FieldKind.SINT,
                  doc="causal: column c is invalid when c > r + causal_offset"),
        # Added for the sparse lowering: the attention's additive (padding) mask row.
        _flag("has_add_mask"), _addr("add_mask_addr", "VBUF: additive row vector of cols"),
    ), (_mat("src_addr", "src_buf", "rows", "cols", "r", "src_stride"),
        _mat("dst_addr", Buffer.MBUF, "rows", "cols", "w"),
        _vec("key_mask_addr", Buffer.MBUF, "cols", enabled_by="has_key_mask"),
        _vec("add_mask_addr", Buffer.VBUF, "cols", enabled_by="has_add_mask")), topk_cost,
        """dst = spls_kernels.topk_mask(scores, k, valid) as bytes 0/1: per row the k
        highest-scoring valid keys (ties: lower key index; rows with fewer valid keys keep
        all of them; a -inf score is never valid). With has_add_mask, scores =
        float32(float32(src) + add_mask[c]): a masked key ranks by its sum, below the
        unmasked ones, as it does when a per-query mask was ADDed to src."""),
    _spec("similarity", 0x33, Queue.PREDICT, Unit.TOPK, (
        _addr("map_addr", "MBUF: reuse map, length little-endian int16"),
        _addr("key_mask_addr", "MBUF: heads x keys key mask out"),
        _addr("spa_addr", "MBUF: heads x length x keys SPA masks, packed"),
        _flag("has_prob"), _addr("prob_addr", "VBUF: heads x length x keys softmax(PAM)"),
        FieldSpec("heads", 8, min_value=1), _dim("length"), _dim("keys"),
        FieldSpec("window", 16), _dim("k", "top-k used to build SPA (overlap normaliser)"),
        _float("threshold"),
        FieldSpec("mode", 1, FieldKind.ENUM, enum=SimilarityMode),
        # Added for the sparse lowering: the computed rows as a GEMM / attention row mask.
        _flag("has_row_mask"), _addr("row_mask_addr", "MBUF: length bytes, 1 = computed"),
        FieldSpec("first_reference", 16,
                  doc="rows before this index are computed and never representatives"),
        # Progressive prediction (.esb version 2): one row chunk per instruction.
        FieldSpec("first_row", 16, doc="first row decided; earlier rows' map entries are read"),
        FieldSpec("row_count", 16, doc="rows decided, 0 = through the last row"),
        # Long sequences: only the chunk's SPA / prob rows on chip, references in a ring.
        _flag("has_ring", "spa / prob hold the chunk's rows only; references in the ring"),
        _addr("ring_addr", "ring_slots x heads x keys reference rows: MBUF SPA rows "
              "(overlap) or VBUF prob rows (cosprob)"),
    ), (Operand("spa_addr", Buffer.MBUF, _f("heads"), lambda f: similarity_spa_rows(f) * f["keys"],
                "r"),
        Operand("prob_addr", Buffer.VBUF, _f("heads"),
                lambda f: similarity_spa_rows(f) * f["keys"], "r", enabled_by="has_prob"),
        Operand("ring_addr", Buffer.MBUF, lambda f: similarity_ring_rows(f, SimilarityMode.OVERLAP),
                lambda f: f["heads"] * f["keys"], "r"),
        Operand("ring_addr", Buffer.MBUF, lambda f: similarity_ring_rows(f, SimilarityMode.OVERLAP),
                lambda f: f["heads"] * f["keys"], "w"),
        Operand("ring_addr", Buffer.VBUF, lambda f: similarity_ring_rows(f, SimilarityMode.COSPROB),
                lambda f: f["heads"] * f["keys"], "r"),
        Operand("ring_addr", Buffer.VBUF, lambda f: similarity_ring_rows(f, SimilarityMode.COSPROB),
                lambda f: f["heads"] * f["keys"], "w"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * f["first_row"], "r"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * similarity_rows(f), "w",
                offset=lambda f: 2 * f["first_row"]),
        Operand("key_mask_addr", Buffer.MBUF, _f("heads"),
                lambda f: f["keys"] if f["first_row"] else 0, "r"),
        _mat("key_mask_addr", Buffer.MBUF, "heads", "keys", "w"),
        Operand("row_mask_addr", Buffer.MBUF, _const(1), similarity_rows, "w",
                enabled_by="has_row_mask", offset=_f("first_row"))),
        topk_cost,
        """Decides rows [first_row, first_row + n) (n = row_count, or through the last row
        when 0): map[first_row:first_row + n] = spls_kernels.local_similarity_rows(spa, prob,
        window, threshold, mode, k, first_reference, map[:first_row], first_row + n), the
        window rebuilt from the earlier rows' entries (each -1 or an earlier computed row), so
        deciding the rows in chunks equals one instruction over all rows = local_similarity
        (docs/design.md section 6 step 4); only SPA / prob rows < first_row + n are read; cosprob
        needs has_prob. key_mask = (first_row > 0 ? key_mask : 0) | the keys the chunk's
        computed rows select per head. With has_row_mask, row_mask[i] = 1 if map[i] == -1
        else 0 for the chunk's rows (the row mask of the masked GEMMs). With has_ring (long
        sequences: all rows' SPA do not fit on chip), spa / prob hold only the chunk's rows
        [heads, n, keys] and the reference rows of earlier chunks are read from the ring at
        ring_addr (spls_kernels.local_similarity_ring: ring_slots(window, length) slots of
        [heads, keys], the j-th computed row from first_reference in slot j mod slots; SPA rows
        in MBUF for overlap, prob rows in VBUF for cosprob); the chunk's computed rows are
        written into their slots. Same map and key mask as without the ring."""),
    # ------------------------------------------------------------------ host + control
    _spec("host", 0x40, Queue.HOST, Unit.HOST, (
        FieldSpec("segment", 16, doc="index of the host segment in the .esb"),
    ), (), host_cost,
        """Run host segment `segment` (an ONNX model stored in the binary) with onnxruntime:
        its inputs are read from and its outputs written to the DRAM tensors its bindings
        describe."""),
    _spec("halt", 0x7F, Queue.COMPUTE, Unit.CONTROL, (), (), unit_cost,
          """End of program; must be the last instruction and appear exactly once."""),
)

# The tables are read-only views; `register_instruction` is the one way to extend them.
_SPECS_BY_NAME: dict[str, InstructionSpec] = {s.name: s for s in _SPECS}
_SPECS_BY_OPCODE: dict[int, InstructionSpec] = {s.opcode: s for s in _SPECS}
INSTRUCTION_SPECS: Mapping[str, InstructionSpec] = MappingProxyType(_SPECS_BY_NAME)
SPECS_BY_OPCODE: Mapping[int, InstructionSpec] = MappingProxyType(_SPECS_BY_OPCODE)

# Buffers each ENUM buffer field may name (the field's doc string states the same).
_ALLOWED_BUFFERS: dict[tuple[str, str], frozenset[Buffer]] = {
    ("load", "buf"): frozenset(Buffer),
    ("store", "buf"): frozenset(Buffer),
    ("gather_rows", "buf"): frozenset({Buffer.ABUF, Buffer.ACC, Buffer.VBUF}),
    ("scatter_rows", "buf"): frozenset({Buffer.ABUF, Buffer.ACC, Buffer.VBUF}),
    ("hlog", "dst_buf"): frozenset({Buffer.ABUF, Buffer.WBUF, Buffer.ACC}),
    ("bpu", "a_buf"): frozenset({Buffer.ABUF, Buffer.WBUF, Buffer.ACC}),
    ("bpu", "b_buf"): frozenset({Buffer.ABUF, Buffer.WBUF, Buffer.ACC}),
    ("topk", "src_buf"): frozenset({Buffer.ACC, Buffer.VBUF}),
}
ALLOWED_BUFFERS: Mapping[tuple[str, str], frozenset[Buffer]] = MappingProxyType(_ALLOWED_BUFFERS)

MAX_INT8_HLOG_BITS = 7  # level 2^(bits-1) = 64 still fits int8


def _check_spec(spec: InstructionSpec, opcodes: set[int]) -> None:
    """Consistency of one table entry against the opcodes already taken (a broken entry is a
    programming error: assertions)."""
    assert spec.opcode not in opcodes and 0 < spec.opcode < (1 << OPCODE_BITS), spec.name
    names = spec.field_names
    assert len(set(names)) == len(names), spec.name
    width = OPCODE_BITS + sum(f.bits for f in spec.fields)
    assert width <= INSTRUCTION_BITS, (spec.name, width)
    for f in spec.fields:
        assert (f.kind is FieldKind.ENUM) == (f.enum is not None), (spec.name, f.name)
        if f.kind is FieldKind.ENUM and f.enum is Buffer:
            assert (spec.name, f.name) in _ALLOWED_BUFFERS, (spec.name, f.name)
    for op in spec.operands:
        assert op.addr in names, (spec.name, op.addr)
        assert op.stride is None or op.stride in names, (spec.name, op.stride)
        assert op.enabled_by is None or op.enabled_by in names, (spec.name, op.enabled_by)
        assert not isinstance(op.buffer, str) or op.buffer in names, (spec.name, op.buffer)


def _check_table() -> None:
    """Import-time consistency of the table."""
    seen_opcodes: set[int] = set()
    for spec in _SPECS:
        _check_spec(spec, seen_opcodes)
        seen_opcodes.add(spec.opcode)


_check_table()


# ----------------------------------------------------------------------------- extensions

InstructionKernel = Callable[[Any, Mapping[str, int]], None]
"""A registered instruction's semantics, `kernel(machine, fields)`: `machine` is the functional
model's `Machine` (`machine.view(addr_field)` gives an operand's array, `machine.work` the
`Work` record to fill for the timing and energy models)."""

_KERNELS: dict[str, InstructionKernel] = {}
INSTRUCTION_KERNELS: Mapping[str, InstructionKernel] = MappingProxyType(_KERNELS)
"""Semantics of registered instructions (the built-in ones are `functional.Machine.op_*`)."""


def define_instruction(name: str, opcode: int, queue: Queue, unit: Unit,
                       fields: tuple[FieldSpec, ...], operands: tuple[Operand, ...],
                       cost: CostFn, semantics: str) -> InstructionSpec:
    """An instruction spec with the common pop/push fields, as the built-ins are written."""
    return _spec(name, opcode, queue, unit, fields, operands, cost, semantics)


def register_instruction(spec: InstructionSpec, kernel: InstructionKernel,
                         allowed_buffers: Mapping[str, frozenset[Buffer]] | None = None) -> None:
    """Add an instruction (e.g. a sparsity scheme's prediction step) to the table every tool
    reads: the encoder, decoder, assembler and loader checks take it from `INSTRUCTION_SPECS`,
    the timing model its `cost`, the functional model `kernel`. `allowed_buffers` names the
    buffers each `Buffer` ENUM field may hold. Name and opcode must be free; the runtime stays
    free of xdsl (an `esact.<name>` op exists for it if it is registered before the `esact`
    dialect is first loaded)."""
    if spec.name in _SPECS_BY_NAME:
        raise ValueError(f"instruction '{spec.name}' is already defined")
    buffers = {(spec.name, field): frozenset(allowed)
               for field, allowed in (allowed_buffers or {}).items()}
    _ALLOWED_BUFFERS.update(buffers)
    try:
        _check_spec(spec, set(_SPECS_BY_OPCODE))
    except AssertionError:
        for key in buffers:
            del _ALLOWED_BUFFERS[key]
        raise ValueError(f"instruction '{spec.name}': inconsistent spec (opcode "
                         f"{spec.opcode:#x} taken or out of range, fields too wide, or an "
                         "operand naming a missing field)") from None
    _SPECS_BY_NAME[spec.name] = spec
    _SPECS_BY_OPCODE[spec.opcode] = spec
    _KERNELS[spec.name] = kernel


def unregister_instruction(name: str) -> None:
    """Remove an instruction `register_instruction` added (built-ins cannot be removed)."""
    if name not in _KERNELS:
        raise ValueError(f"instruction '{name}' was not registered")
    spec = _SPECS_BY_NAME.pop(name)
    del _SPECS_BY_OPCODE[spec.opcode], _KERNELS[name]
    for key in [k for k in _ALLOWED_BUFFERS if k[0] == name]:
        del _ALLOWED_BUFFERS[key]
