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
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.isa import Buffer
from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp
from xdsl.passes import ModulePass

from esact_cc.backend.sram_allocator import buffer_allocators


def allocate_buffers(module: ModuleOp, config: HardwareConfig) -> None:
    """Replace virtual buffers by addresses (see the module docstring)."""
    rings = buffer_allocators(config)
    base: dict[int, int] = {}
    kinds: dict[int, Buffer] = {}
    for op in list(module.body.block.ops):
        if isinstance(op, ReserveOp):
            vid, kind = op.id.value.data, op.buffer_kind
            kinds[vid] = kind
            base[vid] = (op.address.value.data if op.address is not None
                         else rings[kind].alloc(op.size.value.data))
            op.detach()
            op.erase()
        elif isinstance(op, ReleaseOp):
            vid = op.id.value.data
            rings[kinds[vid]].release(base.pop(vid))
            op.detach()
            op.erase()
        elif isinstance(op, esact.InstructionOp) and VBUF_ATTR in op.attributes:
            fields = op.attributes.pop(VBUF_ATTR)
            assert isinstance(fields, DictionaryAttr)
            for name, vid in fields.data.items():
                assert isinstance(vid, IntegerAttr)
                op.set_field(name, base[vid.value.data] + op.field_value(name))


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
