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

This module is the one import point of the ISA; the parts live by concern (a sparsity scheme
or tool imports everything from here):
- isa_fields.py: encoding widths, Queue, Unit, Buffer and its dtypes, field enums, FieldSpec.
- isa_spec.py: InstructionSpec (one table row) and Operand (a memory region of a row).
- isa_costs.py: Work (what an instruction did) and the cycle cost functions.
- isa_table.py: the table itself, INSTRUCTION_SPECS, and register_instruction.
- isa_instruction.py: Instruction (a decoded instruction) and validate_instruction.
- isa_footprint.py: operand_extent and footprint (what an instruction touches).
"""

from __future__ import annotations

from .isa_costs import SFU_PASSES, CostFn, Work
from .isa_fields import (
    BUFFER_CONFIG_ATTRS,
    BUFFER_DTYPES,
    DIM_BITS,
    DRAM_ADDR_BITS,
    DRAM_STRIDE_BITS,
    FLOAT_BITS,
    INSTRUCTION_BITS,
    INSTRUCTION_BYTES,
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
    bits_float,
    buffer_elements,
    float_bits,
    queue_mask_names,
)
from .isa_footprint import Extent, Footprint, footprint, operand_extent
from .isa_instruction import Instruction, validate_instruction
from .isa_spec import InstructionSpec, Operand
from .isa_table import (
    ALLOWED_BUFFERS,
    COMMON_FIELDS,
    INSTRUCTION_KERNELS,
    INSTRUCTION_SPECS,
    MAX_INT8_HLOG_BITS,
    SPECS_BY_OPCODE,
    InstructionKernel,
    define_instruction,
    register_instruction,
    similarity_rows,
    unregister_instruction,
)

__all__ = [
    "ALLOWED_BUFFERS", "BUFFER_CONFIG_ATTRS", "BUFFER_DTYPES", "COMMON_FIELDS", "DIM_BITS",
    "DRAM_ADDR_BITS", "DRAM_STRIDE_BITS", "FLOAT_BITS", "INSTRUCTION_BITS", "INSTRUCTION_BYTES",
    "INSTRUCTION_KERNELS", "INSTRUCTION_SPECS", "MAX_INT8_HLOG_BITS", "OPCODE_BITS",
    "SFU_PASSES", "SPECS_BY_OPCODE", "SRAM_ADDR_BITS", "STRIDE_BITS", "TOKEN_MASK_BITS",
    "Buffer", "CostFn", "Extent", "FieldKind", "FieldSpec", "Footprint",
    "GeluMode", "Instruction", "InstructionKernel", "InstructionSpec", "Operand", "Queue",
    "SimilarityMode", "Unit", "Work", "bits_float", "buffer_elements", "define_instruction",
    "float_bits", "footprint", "operand_extent", "queue_mask_names", "register_instruction",
    "similarity_rows", "unregister_instruction", "validate_instruction",
]

from . import isa_modern_blocks  # noqa: E402  (needs the table above)

isa_modern_blocks.register()

from . import isa_sanger  # noqa: E402  (needs the table above)

isa_sanger.register()

from . import isa_spatten  # noqa: E402  (needs the table above)

isa_spatten.register()

from . import isa_token_scales  # noqa: E402  (needs the table above)

isa_token_scales.register()

from . import isa_spatten_mask  # noqa: E402  (needs the table above)

isa_spatten_mask.register()

from . import isa_online_softmax  # noqa: E402  (needs the table above)

isa_online_softmax.register()

from . import isa_disentangled  # noqa: E402  (needs the table above)

isa_disentangled.register()

from . import isa_prediction_scores  # noqa: E402  (needs the table above)

isa_prediction_scores.register()
