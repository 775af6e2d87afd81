"""The vocabulary the ISA table is written in: encoding widths, queues, units, buffers (with
their element types), the enums instruction fields hold, and `FieldSpec`, one field's width,
kind and allowed range. Every bit width is stated here once (as in VTA's ISA.scala), so the
encoder, decoder, loader checks and hardware config agree.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

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


def float_bits(value: float) -> int:
    """The float32 bit pattern of `value` (rounded to float32; overflow gives +-inf)."""
    with np.errstate(over="ignore"):
        return int(np.array(value, dtype=np.float32).view(np.uint32))


def bits_float(bits: int) -> float:
    """The float32 value of a 32-bit pattern (as a Python float)."""
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def queue_mask_names(mask: int) -> list[str]:
    return [q.name.lower() for q in Queue if mask >> q & 1]
