"""BAND_MASK, the `band_attention` test scheme's prediction instruction: its ISA row (built
with runtime/isa_extension.py's shorthands), functional kernel and cost, added to the ISA table
by `register()` (the scheme's `instructions` hook) with no runtime file edited."""

from __future__ import annotations

from collections.abc import Mapping

from band_attention import band
from esact_cc.runtime.isa import Buffer, Queue, Unit, define_instruction
from esact_cc.runtime.isa_costs import Work
from esact_cc.runtime.isa_extension import addr, dim, field_value, register_once
from esact_cc.runtime.isa_fields import FieldSpec
from esact_cc.runtime.isa_spec import Operand

OPCODE = 0x62


def _band_mask(machine, f: Mapping[str, int]) -> None:
    keep = band(f["lq"], f["lk"], f["window"])
    machine.view("mask_addr")[...] = keep.astype("uint8")
    machine.work.compare_ops = f["lq"] * f["lk"]
    machine.work.mask_total, machine.work.mask_kept = keep.size, int(keep.sum())


def band_cost(f: Mapping[str, int], config, work: Work) -> int:
    """One compare per mask element on the top-k lanes, plus issue."""
    return -(-work.compare_ops // config.topk_lanes) + 1


BAND_MASK = define_instruction(
    "band_mask", OPCODE, Queue.PREDICT, Unit.TOPK,
    (addr("mask_addr", "MBUF: Lq x Lk element mask out, packed"), dim("lq"), dim("lk"),
     FieldSpec("window", 8, doc="keys within this distance of the query are kept")),
    (Operand("mask_addr", Buffer.MBUF, field_value("lq"), field_value("lk"), "w"),),
    band_cost, "mask[r, c] = |r - c| <= window, as bytes 0/1.")


def register() -> None:
    register_once(((BAND_MASK, _band_mask),))
