"""The `lowering` dialect: what instruction selection leaves for the later lowering steps.

`esact-select-instructions` emits the program's instructions in selection order on virtual
buffers, interleaved with these ops; `esact-allocate-buffers` consumes the buffer events and
`esact-order` the placement directives, so the program `schedule` sees holds none of them.

Buffer events (in selection order: the allocation step replays them through the on-chip
allocators, `esact_cc/backend/sram_allocator.py`):
- `lowering.reserve <id> <BUF> <size>`: virtual buffer <id>, <size> elements of buffer BUF,
  live from here; `at <address>` pins it there (outside the allocator);
- `lowering.release <id>`: virtual buffer <id> is dead from here.
An instruction's address field that lies in a virtual buffer holds the offset into it, and the
instruction's attribute `lowering.vbuf = {<field> = <id>, ...}` names the buffer.

Placement directives (the ordering step, `passes/order_instructions.py`):
- `lowering.label <id>`: a point of the selection stream (the instructions selected so far);
- `lowering.place "<policy>" <group> [at <label>]`: apply a policy to the instructions of
  <group> (those with attribute `lowering.group = <group>`): `aside` (hold them out of the
  program), `interleave` (spread the held ones over the anchors selected since <label>, BPUs
  with attribute `lowering.cycles`), `sink` (move the pieces interleave left after the last
  anchor to the end), `prepare` (append the held ones, moving their input preparation to
  just before the first instruction selected after <label>), `append` (append the held ones
  here: instructions selected early, for their buffers, that should run later), `early`
  (append the held ones, each moved back toward the first instruction selected after
  <label> until it meets one sharing a region with it).
A LOAD with attribute `lowering.hoist` moves back past the previous op's SFU/DMA tail.
"""

from __future__ import annotations

from functools import cache

from esact_cc.dialects.integer_attr import i64_attr
from esact_cc.dialects.leaf_op import init_leaf_op
from esact_cc.runtime.isa import Buffer
from xdsl.dialects.builtin import I64, IntegerAttr, StringAttr
from xdsl.ir import Dialect
from xdsl.irdl import IRDLOperation, irdl_op_definition, opt_prop_def, prop_def
from xdsl.utils.exceptions import VerifyException

VBUF_ATTR = "lowering.vbuf"
"""Instruction attribute: address field -> id of the virtual buffer it is an offset into."""
HOIST_ATTR = "lowering.hoist"
"""LOAD attribute: move it back past the previous op's tail (`order_instructions.hoist`)."""
GROUP_ATTR = "lowering.group"
"""Instruction attribute: the placement group it belongs to."""
CYCLES_ATTR = "lowering.cycles"
"""BPU attribute: its estimated cycles (an anchor `interleave` spreads a group over)."""
POLICIES = ("aside", "interleave", "sink", "prepare", "append", "early")


@cache
def _buffer_name(buffer: Buffer) -> StringAttr:
    return StringAttr(buffer.name)


@irdl_op_definition
class ReserveOp(IRDLOperation):
    """Virtual buffer `id`: `size` elements of on-chip buffer `buffer`, live from here."""

    name = "lowering.reserve"

    id = prop_def(IntegerAttr[I64])
    buffer = prop_def(StringAttr)
    size = prop_def(IntegerAttr[I64])
    address = opt_prop_def(IntegerAttr[I64])
    """A pinned address (the allocator does not place it), absent for allocated buffers."""

    assembly_format = "$id $buffer $size (`at` $address^)? attr-dict"

    def __init__(self, vid: int, buffer: Buffer, size: int, address: int | None = None):
        props = {"id": i64_attr(vid), "buffer": _buffer_name(buffer), "size": i64_attr(size)}
        if address is not None:
            props["address"] = i64_attr(address)
        init_leaf_op(self, props)  # no operands or results: nothing for IRDL to build

    @property
    def buffer_kind(self) -> Buffer:
        return Buffer[self.buffer.data]

    def verify_(self) -> None:
        if self.buffer.data not in Buffer.__members__:
            raise VerifyException(f"{self.name}: '{self.buffer.data}' is not an on-chip buffer "
                                  f"({', '.join(Buffer.__members__)})")
        if self.size.value.data < 1:
            raise VerifyException(f"{self.name}: size must be positive")
        if self.address is not None and self.address.value.data < 0:
            raise VerifyException(f"{self.name}: address must be non-negative")


@irdl_op_definition
class ReleaseOp(IRDLOperation):
    """Virtual buffer `id` is dead from here."""

    name = "lowering.release"

    id = prop_def(IntegerAttr[I64])

    assembly_format = "$id attr-dict"

    def __init__(self, vid: int):
        init_leaf_op(self, {"id": i64_attr(vid)})


@irdl_op_definition
class LabelOp(IRDLOperation):
    """A point of the selection stream a placement directive refers to."""

    name = "lowering.label"

    id = prop_def(IntegerAttr[I64])

    assembly_format = "$id attr-dict"

    def __init__(self, label: int):
        init_leaf_op(self, {"id": i64_attr(label)})


@irdl_op_definition
class PlaceOp(IRDLOperation):
    """Apply placement `policy` to group `group` (see the module docstring)."""

    name = "lowering.place"

    policy = prop_def(StringAttr)
    group = prop_def(IntegerAttr[I64])
    label = opt_prop_def(IntegerAttr[I64])

    assembly_format = "$policy $group (`at` $label^)? attr-dict"

    def __init__(self, policy: str, group: int, label: int | None = None):
        props = {"policy": StringAttr(policy), "group": i64_attr(group)}
        if label is not None:
            props["label"] = i64_attr(label)
        super().__init__(properties=props)

    def verify_(self) -> None:
        if self.policy.data not in POLICIES:
            raise VerifyException(f"{self.name}: policy '{self.policy.data}' is not one of "
                                  f"{', '.join(POLICIES)}")
        if (self.label is None) == (self.policy.data in ("interleave", "prepare", "early")):
            raise VerifyException(f"{self.name}: '{self.policy.data}' "
                                  + ("needs a label" if self.label is None else "takes no label"))


STREAM_OPS = (ReserveOp, ReleaseOp, LabelOp, PlaceOp)

LOWERING = Dialect("lowering", list(STREAM_OPS), [])
