"""`esact-allocate-buffers`: on-chip addresses for the virtual buffers of a selected program.

Input: what `esact-select-instructions` leaves: instructions whose address fields are offsets
into virtual buffers (`lowering.vbuf`), between `lowering.reserve` / `lowering.release` events
in selection order. The events are replayed in that order through the buffers' allocators
(`esact_cc/backend/sram_allocator.py`: WBUF and ACC in two banks used in turn, ABUF / VBUF /
MBUF as rings, so tile n+1 lands elsewhere than tile n and its load overlaps the compute on
tile n); a pinned buffer (`at`) keeps its address. Each address field becomes the buffer's
address plus the offset; the events and `lowering.vbuf` attributes are removed. The placement
directives stay for `esact-order`, which checks its moves against these addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from esact_cc.dialects import esact
from esact_cc.dialects.lowering import VBUF_ATTR, ReleaseOp, ReserveOp
from esact_cc.passes.lowering_state import check_selected_for
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.isa import Buffer
from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp
from xdsl.ir import Attribute, Operation
from xdsl.passes import ModulePass

from esact_cc.backend.sram_allocator import buffer_allocators


def _fail(op: Operation, message: str) -> CompileError:
    return CompileError(f"esact-allocate-buffers: {op.name}: {message}")


def _addresses(op: esact.InstructionOp, fields: Attribute, base: dict[int, int]) -> dict[str, int]:
    """Address field -> the virtual buffer's address + the offset the field holds."""
    if not isinstance(fields, DictionaryAttr):
        raise _fail(op, f"'{VBUF_ATTR}' must map address fields to virtual buffer ids")
    names = set(op.isa_spec().field_names)
    addresses = {}
    for name, vid in fields.data.items():
        if name not in names or not isinstance(vid, IntegerAttr):
            raise _fail(op, f"'{VBUF_ATTR}' entry '{name}' is not a field = virtual buffer id")
        if vid.value.data not in base:
            raise _fail(op, f"field '{name}' names virtual buffer {vid.value.data}, which is not "
                        "reserved here")
        addresses[name] = base[vid.value.data] + op.field_value(name)
    return addresses


def allocate_buffers(module: ModuleOp, config: HardwareConfig) -> None:
    """Replace virtual buffers by addresses (see the module docstring). The module is only
    changed once every event and reference checked out."""
    rings = buffer_allocators(config)
    base: dict[int, int] = {}  # live virtual buffer -> its address
    kinds: dict[int, Buffer] = {}
    pinned: set[int] = set()  # outside the allocator: never released
    events: list[Operation] = []
    rewrites: list[tuple[esact.InstructionOp, dict[str, int]]] = []
    for op in module.body.block.ops:
        if isinstance(op, ReserveOp):
            vid, kind = op.id.value.data, op.buffer_kind
            if vid in kinds:
                raise _fail(op, f"virtual buffer {vid} is reserved twice")
            kinds[vid] = kind
            if op.address is not None:
                pinned.add(vid)
                if op.address.value.data + op.size.value.data > rings[kind].capacity:
                    raise _fail(op, f"pinned buffer {vid} runs past the end of {kind.name} "
                                f"({rings[kind].capacity} elements)")
            base[vid] = (op.address.value.data if op.address is not None
                         else rings[kind].alloc(op.size.value.data))
            events.append(op)
        elif isinstance(op, ReleaseOp):
            vid = op.id.value.data
            if vid not in base or vid in pinned:
                raise _fail(op, f"virtual buffer {vid} is not a live allocated buffer")
            rings[kinds[vid]].release(base.pop(vid))
            events.append(op)
        elif isinstance(op, esact.InstructionOp) and VBUF_ATTR in op.attributes:
            rewrites.append((op, _addresses(op, op.attributes[VBUF_ATTR], base)))
    for op, addresses in rewrites:
        del op.attributes[VBUF_ATTR]
        for name, address in addresses.items():
            op.set_field(name, address)
    for op in events:
        op.detach()
        op.erase()


@dataclass(frozen=True)
class AllocateBuffersPass(ModulePass):
    """Virtual buffers of a selected esact program -> on-chip addresses."""

    name = "esact-allocate-buffers"

    hw: str | None = None
    """Hardware config (TOML path or bundled name): the one the program was selected for."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        config = resolve_config(self.hw)
        check_selected_for(op, config, self.name)
        allocate_buffers(op, config)
