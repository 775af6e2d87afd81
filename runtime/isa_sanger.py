"""Sanger's prediction hardware in the ISA table: SANGER_PREDICT and SANGER_PACK, registered
with `isa_table.register_instruction` by `register()`, which runtime/isa.py calls when it is
imported, so every tool (the `esact` dialect included) knows them. Numerics:
runtime/sanger_kernels.py.

- SANGER_PREDICT (PREDICT queue, BPU): one head's predicted mask. From the INT8 Q and K codes
  the attention quantizes anyway (ABUF), re-quantize to `bits`, multiply (Sanger's dense
  low-bit PE array, hardware/src/main/scala/pe_row/mask.scala), softmax with the attention's
  additive mask and causality, keep probabilities > threshold -> MBUF element mask, which the
  masked ATTN_QK / SOFTMAX / ATTN_PV read as their SPA.
- SANGER_PACK (COMPUTE queue, MAC): the pack module (pe_row/pack.scala) turning that mask into
  the sparse PE array's configuration. ATTN_QK / ATTN_PV are costed as if the kept dot
  products were packed onto the array without gaps (isa_costs.mac_sparse_cost); Sanger's
  pack-and-split leaves PEs idle (a sub-row of at most 16 keys per 64-key segment). This
  instruction carries those idle cycles on the MAC array, plus the pack module's streaming
  (one mask column per cycle for a group of PE rows, pack.scala's `in_read` state).

Costs (cycles) are our model, from the functional model's Work:
- SANGER_PREDICT: bpu_cost of Lq*Lk*d low-bit products (`shift_adds`) and Lq*Lk*(softmax's 4
  passes + 1 compare) element operations (`sfu_elements`) on the BPU lanes; with
  `normalize_qk`, (Lq + Lk)*d more products (the squared norms), 2 element passes per row
  (square root, reciprocal) and one per score (times the norms);
- SANGER_PACK: ceil(Lq / R) * Lk streaming + (ceil(S / R) - ceil(K * d / P)) * d
  + (ceil(S / R) - ceil(K * dv / P)) * dv, where S = sub-rows, K = kept keys, P = the MAC
  array's PEs, R = P / SANGER_PES_PER_SUBROW PE rows (negative terms count 0).
Energy: a low-bit product is charged as one shift-add (an int8 add), an assumption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from . import sanger_kernels
from .isa_costs import SFU_PASSES, Work, bpu_cost
from .isa_extension import additive_mask_fields, additive_mask_operand, addr, dim, field_value, \
    register_once, stride
from .isa_fields import FLOAT_BITS, Buffer, FieldKind, FieldSpec, Queue, Unit, bits_float
from .isa_spec import Operand
from .isa_table import define_instruction

if TYPE_CHECKING:
    from .hw_config import HardwareConfig

PREDICT_OPCODE = 0x34
PACK_OPCODE = 0x35
PREDICT_ELEMENT_PASSES = SFU_PASSES["softmax"] + 1
"""Element passes of the prediction per score: softmax's 4, then the threshold compare."""
NORM_ELEMENT_PASSES = 2
"""normalize_qk, per Q or K row: its square root and reciprocal (the d squares are products,
the d scalings of the row folded into the requantization's multiply); per score one multiply
by the two norms."""


def _predict(machine, f: Mapping[str, int]) -> None:
    q8, k8 = machine.view("q_addr"), machine.view("k_addr")
    add = None
    if f["has_add_mask"]:
        add = machine.view("add_mask_addr").astype(np.float32)  # [1 or Lq, Lk]
    visible = None
    if f["causal"]:
        visible = np.arange(f["lk"])[None, :] <= np.arange(f["lq"])[:, None] + f["causal_offset"]
    keep = sanger_kernels.predict_mask(q8, k8, f["bits"], np.float32(bits_float(f["score_scale"])),
                                       bits_float(f["threshold"]), add, visible,
                                       bool(f["normalize_qk"]))
    machine.view("mask_addr")[...] = keep.astype(np.uint8)
    scores = f["lq"] * f["lk"]
    rows = f["lq"] + f["lk"]
    machine.work.shift_adds = scores * f["d"] + (rows * f["d"] if f["normalize_qk"] else 0)
    machine.work.sfu_elements = scores * PREDICT_ELEMENT_PASSES + (
        rows * NORM_ELEMENT_PASSES + scores if f["normalize_qk"] else 0)
    machine.work.mask_total = scores if visible is None else int(visible.sum())
    machine.work.mask_kept = int(keep.sum())


def _pack(machine, f: Mapping[str, int]) -> None:
    mask = machine.mask("mask_addr")
    machine.work.rows_total = f["lq"]
    machine.work.rows_executed = sanger_kernels.pack_and_split_subrows(mask)
    machine.work.mask_total = f["lq"] * f["lk"]
    machine.work.mask_kept = int(mask.sum())


def pack_cost(f: Mapping[str, int], config: HardwareConfig, work: Work) -> int:
    """The pack module's streaming plus the MAC-array cycles pack-and-split leaves idle."""
    pes = config.mac_rows * config.mac_cols
    pe_rows = max(1, pes // sanger_kernels.SANGER_PES_PER_SUBROW)
    passes = -(-work.rows_executed // pe_rows)
    idle = sum(max(0, passes * depth - -(-work.mask_kept * depth // pes))
               for depth in (f["d"], f["dv"]))
    return -(-f["lq"] // pe_rows) * f["lk"] + idle + 1


SANGER_PREDICT = define_instruction(
    "sanger_predict", PREDICT_OPCODE, Queue.PREDICT, Unit.BPU, (
        addr("mask_addr", "MBUF: Lq x Lk element mask out, packed"),
        addr("q_addr", "ABUF: Q codes, Lq x d int8"),
        addr("k_addr", "ABUF: K codes, Lk x d int8"),
        dim("lq"), dim("lk"), dim("d"), stride("q_stride"), stride("k_stride"),
        FieldSpec("bits", 4, min_value=sanger_kernels.MIN_BITS,
                  max_value=sanger_kernels.MAX_BITS, doc="low-bit width of Q and K"),
        FieldSpec("score_scale", FLOAT_BITS, FieldKind.FLOAT32,
                  doc="low-bit product -> predicted logit (sanger_kernels.score_scale)"),
        FieldSpec("threshold", FLOAT_BITS, FieldKind.FLOAT32,
                  doc="keep positions whose predicted probability exceeds it"),
        FieldSpec("normalize_qk", 1, doc="unit-norm Q and K rows before the re-quantization "
                  "(sanger_kernels.unit_codes), the product times both rows' norms"),
        *additive_mask_fields("Lq", "Lk"),
        FieldSpec("causal_offset", 16, FieldKind.SINT,
                  doc="causal: key c is invisible to query r when c > r + causal_offset"),
    ), (
        Operand("q_addr", Buffer.ABUF, field_value("lq"), field_value("d"), "r", "q_stride"),
        Operand("k_addr", Buffer.ABUF, field_value("lk"), field_value("d"), "r", "k_stride"),
        additive_mask_operand("lq", "lk"),
        Operand("mask_addr", Buffer.MBUF, field_value("lq"), field_value("lk"), "w"),
    ), bpu_cost,
    """mask = sanger_kernels.predict_mask(Q, K, bits, score_scale, threshold, add_mask,
    visible) as bytes 0/1: Q and K re-quantized to `bits` (round(c * level / 127)), their
    product times score_scale plus the additive mask, softmax over visible keys in float64
    rounded to float32, kept where > threshold, and each row's top key.""")

SANGER_PACK = define_instruction(
    "sanger_pack", PACK_OPCODE, Queue.COMPUTE, Unit.MAC, (
        addr("mask_addr", "MBUF: Lq x Lk element mask, packed"),
        dim("lq"), dim("lk"), dim("d"), dim("dv"),
    ), (
        Operand("mask_addr", Buffer.MBUF, field_value("lq"), field_value("lk"), "r"),
    ), pack_cost,
    """Configure the sparse PE array for one head's mask: pack-and-split it into sub-rows
    (sanger_kernels.pack_and_split_subrows; rows_executed = sub-rows). No buffer is written;
    its cost is the packing's streaming and the PE cycles the packed layout leaves idle in the
    ATTN_QK (depth d) and ATTN_PV (depth dv) that follow.""")


def register() -> None:
    """Add SANGER_PREDICT and SANGER_PACK to the ISA table (runtime/isa.py calls it once)."""
    register_once(((SANGER_PREDICT, _predict), (SANGER_PACK, _pack)))
