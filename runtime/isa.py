"""The ESACT instruction set: the one declarative table every tool reads.

`INSTRUCTION_SPECS` maps each mnemonic to its opcode, its ordered fields (bit width, kind,
signedness, allowed range), the queue and unit it runs on, its semantics, its memory operands
(used for static bounds checks, for the functional model's views and for SRAM traffic) and its
cost in cycles as a function of (fields, config, work). The encoder (encoding.py), the
disassembler/assembler (assembly.py), the loader's checks (esb.py), the functional model
(functional.py), the timing model and the `esact` dialect all derive from this table.

Conventions (they hold for every instruction):
- Every instruction is `INSTRUCTION_BITS` wide: opcode (8 bits), then `pop` and `push` (6-bit
  masks over `Queue`), then the instruction's own fields in table order, LSB first, zero padded.
- Dependency tokens as in VTA, generalised to 6 queues: before an instruction starts it pops
  one token from the channel (q -> own queue) for each bit q of `pop`; when it finishes it
  pushes one token to the channel (own queue -> q) for each bit q of `push`. Instructions of
  one queue run in program order. Program order is also the reference serialization that the
  functional model executes: the compiler's tokens must make every schedule the queues allow
  equivalent to it. The loader rejects programs whose pops cannot all be satisfied.
- On-chip buffers (`Buffer`) are addressed in ELEMENTS of their own type: WBUF int8 (weights),
  ABUF int8 (activations), ACC int32 (accumulators), VBUF float32 (SFU operands: residual
  stream, softmax rows, scales, biases, LN gamma/beta), MBUF uint8 (masks). Sizes are the
  config's [sram] bytes divided by the element size.
- A 2-D operand is (address, rows, cols, stride): element (r, c) lives at
  address + r * stride + c. A stride field of 0 means packed rows (stride = cols); a nonzero
  stride must be >= cols. Strides make per-head attention possible on strided sub-blocks:
  head h of a [L, 768] tile is (address + 64 * h, L rows, 64 cols, stride 768). Operands that
  have no stride field (masks, vectors) are packed.
- Masks in MBUF are one byte per element, nonzero = selected. A reuse map is L little-endian
  int16 values in MBUF (2 bytes per row, so 2 * L MBUF elements): -1 = computed row, else the
  index of the representative row.
- DRAM is flat and byte addressed. LOAD/STORE move rows of `cols` buffer elements; the DRAM
  side is (dram_addr, rows, cols * element bytes, dram_stride bytes), 0 = packed.
- Float immediates are float32 bit patterns in a 32-bit field (`FieldKind.FLOAT32`).
- SFU arithmetic is done in float64 and rounded once to float32 on store; integer results
  (GEMM, attention, REQUANT, QUANT, BPU) are exact, with int32 wrap-around in GEMM/attention
  accumulators and saturation in BPU outputs.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ProgramError

if TYPE_CHECKING:
    from .hw_config import HardwareConfig

INSTRUCTION_BITS = 320  # 256 until .esb version 2 (the progressive SIMILARITY fields)
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8

# Field widths used throughout the table (one place to change them).
OPCODE_BITS = 8
TOKEN_MASK_BITS = 6
SRAM_ADDR_BITS = 22  # 4 Mi elements per buffer
DIM_BITS = 16  # rows / cols / M / K / N up to 65535
STRIDE_BITS = 16  # SRAM row stride in elements
DRAM_ADDR_BITS = 32  # 4 GiB byte address space (config capacity bounds it further)
DRAM_STRIDE_BITS = 32
FLOAT_BITS = 32


class Queue(IntEnum):
    """The six in-order instruction queues; bit q of a token mask refers to queue q."""

    LOAD = 0  # DMA in
    COMPUTE = 1  # MAC array
    PREDICT = 2  # BPU + top-k / similarity unit
    SFU = 3  # 64 FP32 lanes
    STORE = 4  # DMA out
    HOST = 5  # CPU fallback (ONNX host segments via onnxruntime)


class Unit(str, Enum):
    """Hardware unit an instruction occupies (timing and energy accounting)."""

    DMA = "dma"
    MAC = "mac"
    BPU = "bpu"
    TOPK = "topk"
    SFU = "sfu"
    HOST = "host"
    CONTROL = "control"


class Buffer(IntEnum):
    """On-chip buffers; each is addressed in elements of its own dtype."""

    WBUF = 0
    ABUF = 1
    ACC = 2
    VBUF = 3
    MBUF = 4


BUFFER_DTYPES: Mapping[Buffer, np.dtype[Any]] = MappingProxyType({
    Buffer.WBUF: np.dtype(np.int8),
    Buffer.ABUF: np.dtype(np.int8),
    Buffer.ACC: np.dtype(np.int32),
    Buffer.VBUF: np.dtype(np.float32),
    Buffer.MBUF: np.dtype(np.uint8),
})

# HardwareConfig attribute holding each buffer's size in bytes.
BUFFER_CONFIG_ATTRS: Mapping[Buffer, str] = MappingProxyType({
    Buffer.WBUF: "weight_buffer_bytes",
    Buffer.ABUF: "activation_buffer_bytes",
    Buffer.ACC: "accumulator_buffer_bytes",
    Buffer.VBUF: "vector_buffer_bytes",
    Buffer.MBUF: "mask_buffer_bytes",
})


def buffer_elements(config: HardwareConfig, buf: Buffer) -> int:
    """Capacity of `buf` in elements under `config`."""
    return int(getattr(config, BUFFER_CONFIG_ATTRS[buf])) // BUFFER_DTYPES[buf].itemsize


class GeluMode(IntEnum):
    ERF = 0  # 0.5 x (1 + erf(x / sqrt 2))  (BERT, ViT)
    TANH = 1  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (GPT-2)


class SimilarityMode(IntEnum):
    OVERLAP = 0
    COSPROB = 1


class FieldKind(Enum):
    UINT = "uint"
    SINT = "sint"  # two's complement
    FLOAT32 = "float32"  # stored as the float32 bit pattern
    ENUM = "enum"  # unsigned, value must be a member of `FieldSpec.enum`
    FLAG = "flag"  # 1 bit
    QUEUE_MASK = "queue_mask"  # bit q = Queue(q)


@dataclass(frozen=True)
class FieldSpec:
    """One instruction field: name, width in bits, kind and allowed range."""

    name: str
    bits: int
    kind: FieldKind = FieldKind.UINT
    enum: type[IntEnum] | None = None
    min_value: int | None = None  # semantic minimum (UINT/SINT), checked by validation
    max_value: int | None = None  # semantic maximum, checked by validation
    doc: str = ""

    @property
    def signed(self) -> bool:
        return self.kind is FieldKind.SINT

    @cached_property
    def encodable_range(self) -> tuple[int, int]:
        """Range of raw values the bit width can hold (floats: their uint32 pattern)."""
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    @cached_property
    def valid_range(self) -> tuple[int, int]:
        """Range of values validation accepts (encodable range narrowed by min/max)."""
        lo, hi = self.encodable_range
        if self.min_value is not None:
            lo = max(lo, self.min_value)
        if self.max_value is not None:
            hi = min(hi, self.max_value)
        return lo, hi


@dataclass(frozen=True)
class Operand:
    """A memory region an instruction reads or writes, as a function of its fields.

    `buffer` is a Buffer, the name of an ENUM field holding one, or None for DRAM (then sizes
    are in bytes). `rows`/`cols` are callables of the field dict; `stride` names a stride
    field (0 = packed) or is None (packed). `enabled_by` names a flag field that must be 1
    for the operand to exist. `elem_bytes` (DRAM only) gives the bytes per element moved.
    `offset` (a callable of the fields, default none) is added to the address field: the
    operand is a part of the region the address names (e.g. one row chunk of a reuse map).
    """

    addr: str
    buffer: Buffer | str | None
    rows: Callable[[Mapping[str, int]], int]
    cols: Callable[[Mapping[str, int]], int]
    access: str  # "r" or "w"
    stride: str | None = None
    enabled_by: str | None = None
    offset: Callable[[Mapping[str, int]], int] | None = None


@dataclass
class Work:
    """What one executed instruction actually did (filled by the functional model).

    The timing model turns it into cycles through `InstructionSpec.cost`; the energy model
    into joules. Dense counts are what the instruction would do with no masks.
    """

    macs_dense: int = 0
    macs_executed: int = 0
    shift_adds: int = 0
    sfu_elements: int = 0
    compare_ops: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    sram_read_bytes: dict[str, int] = field(default_factory=dict)  # by Buffer name
    sram_write_bytes: dict[str, int] = field(default_factory=dict)
    rows_total: int = 0  # GEMM/ATTN_PV rows, SIMILARITY rows
    rows_executed: int = 0  # rows a row mask keeps; SIMILARITY: computed rows
    cols_total: int = 0
    cols_executed: int = 0
    mask_total: int = 0  # element-mask positions considered (attention, TOPK)
    mask_kept: int = 0  # positions selected
    host_flops: int = 0  # HOST: rough operation count of the segment (elements touched)


CostFn = Callable[[Mapping[str, int], "HardwareConfig", Work], int]


@dataclass(frozen=True)
class InstructionSpec:
    name: str
    opcode: int
    queue: Queue
    unit: Unit
    fields: tuple[FieldSpec, ...]  # includes the common pop/push fields first
    operands: tuple[Operand, ...]
    semantics: str
    cost: CostFn

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def field_name_set(self) -> frozenset[str]:
        return frozenset(self.field_names)

    @cached_property
    def used_bits(self) -> int:
        """Bits of the encoding this instruction uses (the rest must be zero)."""
        return OPCODE_BITS + sum(f.bits for f in self.fields)


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


def float_bits(value: float) -> int:
    """The float32 bit pattern of `value` (rounded to float32; overflow gives +-inf)."""
    with np.errstate(over="ignore"):
        return int(np.array(value, dtype=np.float32).view(np.uint32))


def bits_float(bits: int) -> float:
    """The float32 value of a 32-bit pattern (as a Python float)."""
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


# ----------------------------------------------------------------------------- costs
# Cycle costs. Hardware numbers come from the config; the per-instruction constants below
# (SFU passes per element) are properties of the algorithm each instruction runs, documented
# here as assumptions.

SFU_PASSES = MappingProxyType({
    "softmax": 4,  # max, exp, sum, divide
    "layernorm": 4,  # mean, variance, normalize, affine
    "gelu": 2,  # polynomial/erf evaluation is two lane passes
})


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _columnwise(cost: CostFn) -> CostFn:
    """Marks a cost written only in operations numpy broadcasts (no branch on a value): the
    timing model calls it once per opcode with a Work whose counts are int64 columns."""
    cost.columnwise = True  # type: ignore[attr-defined]
    return cost


@_columnwise
def _dma_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    moved = work.dram_read_bytes + work.dram_write_bytes
    return config.dram_latency_cycles + _ceil_div(moved, max(1, int(config.dram_bytes_per_cycle)))


@_columnwise
def _mac_tile_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """Output-stationary R x C array: one K-deep pass per output tile of executed rows/cols."""
    rows, cols = work.rows_executed, work.cols_executed
    depth = work.macs_executed // np.maximum(1, rows * cols)
    tiles = _ceil_div(rows, config.mac_rows) * _ceil_div(cols, config.mac_cols)
    cycles = tiles * np.maximum(1, depth) + config.mac_rows + config.mac_cols
    return np.where((rows == 0) | (cols == 0), 1, cycles)


@_columnwise
def _mac_sparse_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """Masked attention: the sequencer packs selected (row, key) dot products onto the array."""
    lanes = config.mac_rows * config.mac_cols
    return _ceil_div(work.macs_executed, lanes) + config.mac_rows + config.mac_cols


def _sfu_cost(passes: int) -> CostFn:
    @_columnwise
    def cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
        return _ceil_div(work.sfu_elements * passes, config.sfu_lanes) + 1
    return cost


@_columnwise
def _bpu_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return _ceil_div(work.shift_adds + work.sfu_elements, config.bpu_lanes) + 1


@_columnwise
def _topk_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return _ceil_div(work.compare_ops, config.topk_lanes) + 1


@_columnwise
def _host_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    # Assumption: a host segment is bound by moving its tensors over the DRAM interface.
    return _dma_cost(f, config, work)


@_columnwise
def _unit_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    return 1


def similarity_rows(f: Mapping[str, int]) -> int:
    """Rows one SIMILARITY instruction decides: row_count, 0 = from first_row to the end."""
    return f["row_count"] or max(0, f["length"] - f["first_row"])


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


def _spec(name: str, opcode: int, queue: Queue, unit: Unit, fields: tuple[FieldSpec, ...],
          operands: tuple[Operand, ...], cost: CostFn, semantics: str) -> InstructionSpec:
    return InstructionSpec(name, opcode, queue, unit, COMMON_FIELDS + fields, operands,
                           " ".join(semantics.split()), cost)


_SPECS: tuple[InstructionSpec, ...] = (
    # ------------------------------------------------------------------ DMA
    _spec("load", 0x01, Queue.LOAD, Unit.DMA, _DMA_FIELDS, _dma_operands("w", "r"), _dma_cost,
          """2-D strided copy DRAM -> buffer `buf`: row r of `cols` elements (buffer dtype,
          little endian) from dram_addr + r * dram_stride to sram_addr + r * sram_stride."""),
    _spec("store", 0x02, Queue.STORE, Unit.DMA, _DMA_FIELDS, _dma_operands("r", "w"), _dma_cost,
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
    ), _mac_tile_cost,
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
    ), _mac_sparse_cost,
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
    ), _mac_sparse_cost,
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
    ), (*_rowwise_operands(Buffer.ACC, Buffer.VBUF),
        _vec("scale_addr", Buffer.VBUF, "cols"),
        _vec("bias_addr", Buffer.VBUF, "cols", enabled_by="has_bias"),
        Operand("scalar_addr", Buffer.VBUF, _const(1), _f("scalar_count"), "r"),
        ), _sfu_cost(1),
        """dst[r, c] = float32(src[r, c] * scale[c] * prod(vbuf[scalar_addr + i] for i <
        scalar_count) + (bias[c] if has_bias)), computed in float64."""),
    _spec("requant", 0x21, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "ABUF int8"), _addr("src_addr", "ACC int32"), *_ROWWISE,
        _addr("mult_addr", "VBUF: per-column multiplier vector of cols"),
    ), (*_rowwise_operands(Buffer.ACC, Buffer.ABUF),
        _vec("mult_addr", Buffer.VBUF, "cols")), _sfu_cost(1),
        """dst[r, c] = clip(round_half_even(src[r, c] * mult[c]), -127, 127) as int8, the
        product in float64; NaN gives 0."""),
    _spec("quant", 0x22, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "ABUF int8"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _float("mult", "per-tensor multiplier (1 / scale)"),
    ), _rowwise_operands(Buffer.VBUF, Buffer.ABUF), _sfu_cost(1),
        """dst[r, c] = clip(round_half_even(src[r, c] * mult), -127, 127) as int8, the product
        in float64; NaN gives 0."""),
    _spec("softmax", 0x23, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _float("scale", "logits multiplier, e.g. 1/sqrt(d_head)"),
        _flag("has_add_mask"), _addr("add_mask_addr", "VBUF: additive row vector of cols"),
        _flag("causal"),
        FieldSpec("causal_offset", 16, FieldKind.SINT,
                  doc="causal: column c is masked when c > r + causal_offset"),
        _flag("has_elem_mask"), _addr("elem_mask_addr", "MBUF: rows x cols, packed"),
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.VBUF),
        _vec("add_mask_addr", Buffer.VBUF, "cols", enabled_by="has_add_mask"),
        _mat("elem_mask_addr", Buffer.MBUF, "rows", "cols", "r", enabled_by="has_elem_mask"),
        ), _sfu_cost(SFU_PASSES["softmax"]),
        """Row softmax in float64: z = src * scale (+ add_mask[c]); positions the causal rule
        or the element mask exclude are -inf; dst = exp(z - max) / sum, excluded positions 0,
        a row with no valid position all 0."""),
    _spec("layernorm", 0x24, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        _addr("gamma_addr", "VBUF: cols"), _addr("beta_addr", "VBUF: cols"),
        _float("eps"),
    ), (*_rowwise_operands(Buffer.VBUF, Buffer.VBUF),
        _vec("gamma_addr", Buffer.VBUF, "cols"), _vec("beta_addr", Buffer.VBUF, "cols")),
        _sfu_cost(SFU_PASSES["layernorm"]),
        """Per row in float64: mean, biased variance; dst = (x - mean) / sqrt(var + eps) *
        gamma + beta."""),
    _spec("gelu", 0x25, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("src_addr", "VBUF fp32"), *_ROWWISE,
        FieldSpec("mode", 1, FieldKind.ENUM, enum=GeluMode),
    ), _rowwise_operands(Buffer.VBUF, Buffer.VBUF), _sfu_cost(SFU_PASSES["gelu"]),
        """dst = GELU(src) in float64: ERF 0.5 x (1 + erf(x / sqrt 2)); TANH 0.5 x (1 +
        tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""),
    _spec("add", 0x26, Queue.SFU, Unit.SFU, (
        _addr("dst_addr", "VBUF fp32"), _addr("a_addr", "VBUF fp32"), _addr("b_addr", "VBUF fp32"),
        _dim("rows"), _dim("cols"),
        _stride("dst_stride"), _stride("a_stride"), _stride("b_stride"),
    ), (_mat("a_addr", Buffer.VBUF, "rows", "cols", "r", "a_stride"),
        _mat("b_addr", Buffer.VBUF, "rows", "cols", "r", "b_stride"),
        _mat("dst_addr", Buffer.VBUF, "rows", "cols", "w", "dst_stride")), _sfu_cost(1),
        """dst = float32(a + b) (residual add)."""),
    _spec("gather_rows", 0x27, Queue.SFU, Unit.SFU, (
        _buf("buf", (Buffer.ABUF, Buffer.ACC, Buffer.VBUF)),
        _addr("dst_addr"), _addr("src_addr"), *_ROWWISE,
        _addr("map_addr", "MBUF: reuse map, rows little-endian int16"),
    ), (_mat("src_addr", "buf", "rows", "cols", "r", "src_stride"),
        _mat("dst_addr", "buf", "rows", "cols", "w", "dst_stride"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * f["rows"], "r")),
        _sfu_cost(1),
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
        _sfu_cost(1),
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
    ), (*_rowwise_operands(Buffer.VBUF, "dst_buf"),
        _vec("scale_out_addr", Buffer.VBUF, "dynamic", "w", enabled_by="dynamic")),
        _bpu_cost,
        """dst = spls_kernels.hlog_quantize(src, bits, scale): signed HLog level values
        (DESIGN.md section 6 step 1)."""),
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
        _mat("dst_addr", Buffer.ACC, "m", "n", "w", "dst_stride")), _bpu_cost,
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
        _vec("add_mask_addr", Buffer.VBUF, "cols", enabled_by="has_add_mask")), _topk_cost,
        """dst = spls_kernels.topk_mask(scores, k, valid) as bytes 0/1: per row the k
        highest-scoring valid keys (ties: lower key index; rows with fewer valid keys keep
        all of them). With has_add_mask, scores = float32(float32(src) + add_mask[c]) and key
        c is invalid where add_mask[c] <= TOPK_MASKED_ADDITIVE."""),
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
    ), (Operand("spa_addr", Buffer.MBUF, _f("heads"), lambda f: f["length"] * f["keys"], "r"),
        Operand("prob_addr", Buffer.VBUF, _f("heads"), lambda f: f["length"] * f["keys"], "r",
                enabled_by="has_prob"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * f["first_row"], "r"),
        Operand("map_addr", Buffer.MBUF, _const(1), lambda f: 2 * similarity_rows(f), "w",
                offset=lambda f: 2 * f["first_row"]),
        Operand("key_mask_addr", Buffer.MBUF, _f("heads"),
                lambda f: f["keys"] if f["first_row"] else 0, "r"),
        _mat("key_mask_addr", Buffer.MBUF, "heads", "keys", "w"),
        Operand("row_mask_addr", Buffer.MBUF, _const(1), similarity_rows, "w",
                enabled_by="has_row_mask", offset=_f("first_row"))),
        _topk_cost,
        """Decides rows [first_row, first_row + n) (n = row_count, or through the last row
        when 0): map[first_row:first_row + n] = spls_kernels.local_similarity_rows(spa, prob,
        window, threshold, mode, k, first_reference, map[:first_row], first_row + n), the
        window rebuilt from the earlier rows' entries (each -1 or an earlier computed row), so
        deciding the rows in chunks equals one instruction over all rows = local_similarity
        (DESIGN.md section 6 step 4); only SPA / prob rows < first_row + n are read; cosprob
        needs has_prob. key_mask = (first_row > 0 ? key_mask : 0) | the keys the chunk's
        computed rows select per head. With has_row_mask, row_mask[i] = 1 if map[i] == -1
        else 0 for the chunk's rows (the row mask of the masked GEMMs)."""),
    # ------------------------------------------------------------------ host + control
    _spec("host", 0x40, Queue.HOST, Unit.HOST, (
        FieldSpec("segment", 16, doc="index of the host segment in the .esb"),
    ), (), _host_cost,
        """Run host segment `segment` (an ONNX model stored in the binary) with onnxruntime:
        its inputs are read from and its outputs written to the DRAM tensors its bindings
        describe."""),
    _spec("halt", 0x7F, Queue.COMPUTE, Unit.CONTROL, (), (), _unit_cost,
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
TOPK_MASKED_ADDITIVE = -1.0e4
"""TOPK add mask: a key whose additive mask value is at or below this is invalid (HF exports
use -10000 or the float32 minimum; the same rule as the spls reference interpreter)."""


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


# ----------------------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instruction:
    """A decoded instruction: mnemonic and every field's raw value (floats as bit patterns).

    Build one with `Instruction.make("gemm", m=4, ...)`: omitted fields are 0 and float
    fields accept Python floats.
    """

    opcode_name: str
    fields: Mapping[str, int]

    @property
    def spec(self) -> InstructionSpec:
        return INSTRUCTION_SPECS[self.opcode_name]

    @staticmethod
    def make(opcode_name: str, **values: float) -> Instruction:
        if opcode_name not in INSTRUCTION_SPECS:
            raise ProgramError(f"unknown instruction '{opcode_name}'")
        spec = INSTRUCTION_SPECS[opcode_name]
        unknown = set(values) - set(spec.field_names)
        if unknown:
            raise ProgramError(f"{opcode_name}: unknown field(s) {', '.join(sorted(unknown))}")
        raw: dict[str, int] = {}
        for f in spec.fields:
            value = values.get(f.name, 0)
            if f.kind is FieldKind.FLOAT32 and isinstance(value, float):
                value = float_bits(value)
            raw[f.name] = int(value)
        return Instruction(opcode_name, MappingProxyType(raw))

    def float_field(self, name: str) -> float:
        return bits_float(self.fields[name])

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Instruction) and self.opcode_name == other.opcode_name
                and dict(self.fields) == dict(other.fields))

    def __hash__(self) -> int:
        return hash((self.opcode_name, tuple(sorted(self.fields.items()))))

    def __repr__(self) -> str:
        return f"Instruction({self.opcode_name!r}, {dict(self.fields)!r})"


def validate_instruction(instr: Instruction, index: int) -> None:
    """Field-level checks (independent of the config): value ranges, enum members, the
    buffers an operand may name, HLog bits for int8 buffers. Raises ProgramError naming the
    instruction index and the field."""
    spec = INSTRUCTION_SPECS.get(instr.opcode_name)
    if spec is None:
        raise ProgramError(f"instruction {index}: unknown opcode '{instr.opcode_name}'")
    where = f"instruction {index} ({spec.name})"
    if instr.fields.keys() != spec.field_name_set:
        raise ProgramError(f"{where}: fields do not match the ISA table")
    for f in spec.fields:
        value = instr.fields[f.name]
        lo, hi = f.valid_range
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ProgramError(f"{where}: field '{f.name}' = {value} outside [{lo}, {hi}]")
        if f.enum is not None:
            try:
                member = f.enum(value)
            except ValueError:
                raise ProgramError(
                    f"{where}: field '{f.name}' = {value} is not a valid {f.enum.__name__}"
                ) from None
            allowed = ALLOWED_BUFFERS.get((spec.name, f.name))
            if allowed is not None and member not in allowed:
                raise ProgramError(f"{where}: field '{f.name}' = {member.name} not allowed here"
                                   f" (allowed: {', '.join(sorted(b.name for b in allowed))})")
        if f.kind is FieldKind.FLOAT32 and not math.isfinite(bits_float(value)):
            raise ProgramError(f"{where}: field '{f.name}' is not a finite float")
    for op in spec.operands:
        if op.stride is not None:
            stride = instr.fields[op.stride]
            cols = op.cols(instr.fields)
            if stride != 0 and stride < cols:
                raise ProgramError(f"{where}: field '{op.stride}' = {stride} < row length {cols}")
    if spec.name == "hlog" and Buffer(instr["dst_buf"]) is not Buffer.ACC \
            and instr["bits"] > MAX_INT8_HLOG_BITS:
        raise ProgramError(f"{where}: field 'bits' = {instr['bits']} needs dst_buf ACC "
                           f"(int8 buffers hold at most {MAX_INT8_HLOG_BITS}-bit HLog levels)")
    if spec.name == "hlog" and not instr["dynamic"] and not bits_float(instr["scale"]) > 0:
        raise ProgramError(f"{where}: field 'scale' must be positive")
    if spec.name == "similarity" and instr["mode"] == SimilarityMode.COSPROB \
            and not instr["has_prob"]:
        raise ProgramError(f"{where}: field 'has_prob' must be 1 for mode COSPROB")
    if spec.name == "similarity" and not (instr["first_row"] < instr["length"] and
                                          instr["first_row"] + similarity_rows(instr.fields)
                                          <= instr["length"]):
        raise ProgramError(f"{where}: fields 'first_row' = {instr['first_row']}, 'row_count' = "
                           f"{instr['row_count']} leave the {instr['length']} rows")
    if spec.name == "topk" and instr["k"] > instr["cols"]:
        raise ProgramError(f"{where}: field 'k' = {instr['k']} > cols {instr['cols']}")


def operand_extent(instr: Instruction, op: Operand) -> tuple[Buffer | None, int, int] | None:
    """(buffer or None for DRAM, first element/byte, one past the last) of an operand, or
    None when the operand is disabled. Sizes: rows > 0 and cols > 0 assumed validated."""
    f = instr.fields
    if op.enabled_by is not None and not f[op.enabled_by]:
        return None
    rows, cols = op.rows(f), op.cols(f)
    if rows == 0 or cols == 0:
        return None
    buffer: Buffer | None
    if isinstance(op.buffer, str):
        buffer = Buffer(f[op.buffer])
    else:
        buffer = op.buffer
    stride = f[op.stride] if op.stride is not None else 0
    stride = stride or cols
    start = f[op.addr] + (op.offset(f) if op.offset is not None else 0)
    return buffer, start, start + (rows - 1) * stride + cols


Extent = tuple["Buffer | None", int, int]
"""(buffer, or None for DRAM; first element / byte; one past the last)."""


@dataclass(frozen=True)
class Footprint:
    """What one instruction reads and writes, from its operands in the ISA table. `everything`:
    HOST and HALT, whose effects the table does not spell out (a HOST segment's tensors are
    bound outside the instruction), count as touching all memory."""

    reads: tuple[Extent, ...]
    writes: tuple[Extent, ...]
    everything: bool = False

    def touches(self, buffer: Buffer | None, start: int, end: int) -> bool:
        """Does the instruction read or write `buffer`[start, end)?"""
        return self.everything or any(b is buffer and s < end and start < e
                                      for b, s, e in (*self.reads, *self.writes))

    def conflicts(self, other: Footprint) -> bool:
        """Do the two touch a common region, one of them writing? (Operands only.)"""
        return (_overlap(self.writes, (*other.reads, *other.writes))
                or _overlap(self.reads, other.writes))


def _overlap(a: Sequence[Extent], b: Sequence[Extent]) -> bool:
    return any(x[0] is y[0] and x[1] < y[2] and y[1] < x[2] for x in a for y in b)


def footprint(instr: Instruction) -> Footprint:
    """The one answer to 'what does this instruction touch' (lowering order, scheduling)."""
    reads: list[Extent] = []
    writes: list[Extent] = []
    for operand in instr.spec.operands:
        extent = operand_extent(instr, operand)
        if extent is not None:
            (writes if operand.access == "w" else reads).append(extent)
    return Footprint(tuple(reads), tuple(writes), instr.spec.name in ("host", "halt"))


def queue_mask_names(mask: int) -> list[str]:
    return [q.name.lower() for q in Queue if mask >> q & 1]
