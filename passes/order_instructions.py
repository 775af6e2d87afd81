"""`esact-order`: the program order of an allocated esact program, from the placement
directives instruction selection left in its stream.

Selection emits instructions in the order its rules run; what should go elsewhere is said by
directives (`dialects/lowering.py`). This step walks the stream in selection order, building
the program, and applies each directive where it stands, on the program built so far, so
every policy sees the instructions selected before it (as if it had run during selection):
- a LOAD marked `lowering.hoist` moves back past the previous op's SFU/DMA tail (`hoist`);
- `place "aside" G` takes group G's instructions out of the program and holds them;
- `place "interleave" G at L` spreads held group G over the BPUs selected since label L,
  `place "sink" G` moves the pieces it left after the last one to the end, and
  `place "prepare" G at L` appends held group G, moves its input preparation before the
  first instruction selected after label L and interleaves its column tiles' GEMMs by row
  chunk (`passes/prediction_overlap.py`), `place "append" G` appends held group G, and
  `place "early" G at L` appends it, each instruction moved back toward the first one
  selected after label L as far as nothing it passes shares a region with it, and
  `place "follow" G at L` likewise but each then just after the next SIMILARITY
  (`prediction_overlap.follow`).
Every move is checked on `isa.footprint` of the allocated instructions (the analysis
`schedule` derives tokens from), so it never passes an instruction sharing a region with the
moved one, one of them writing: program-order semantics are unchanged. The directives and
the placement attributes are removed; the result ends in `halt` as selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esact_cc.dialects import esact
from esact_cc.dialects.lowering import (
    CYCLES_ATTR,
    GROUP_ATTR,
    HOIST_ATTR,
    LabelOp,
    PlaceOp,
    ReleaseOp,
    ReserveOp,
)
from esact_cc.passes import prediction_overlap as overlap
from esact_cc.passes.lowering_state import check_selected_for
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import HardwareConfig, resolve_config
from esact_cc.runtime.isa import Queue, footprint
from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, UnitAttr
from xdsl.ir import Operation
from xdsl.passes import ModulePass

HOIST_WINDOW = 400
"""How far back (instructions) a hoisted LOAD may move."""
PLACEMENT_ATTRS = (HOIST_ATTR, GROUP_ATTR, CYCLES_ATTR)


def hoist(program: list[Operation]) -> None:
    """Move the LOAD of read-only data last in `program` back to just after the last
    MAC-array instruction, past the SFU/DMA tail of the previous op (at most HOIST_WINDOW
    instructions), so the load queue fetches it while that tail runs instead of after it. Not
    past anything touching its destination: program-order semantics are unchanged, since its
    DRAM source is never written. Not past the last MAC instruction: the ring allocator keeps
    the region clear of that one, so the load never blocks the in-order load queue waiting
    for it."""
    op = program.pop()
    ((buf, start, end),) = footprint(op.to_instruction()).writes  # type: ignore[attr-defined]
    position = len(program)
    floor = max(0, position - HOIST_WINDOW)
    while position > floor:
        prev = program[position - 1]
        assert isinstance(prev, esact.InstructionOp)
        if prev.isa_spec().queue == Queue.COMPUTE or \
                footprint(prev.to_instruction()).touches(buf, start, end):
            break
        position -= 1
    program.insert(position, op)


def _check_placement_attrs(op: Operation) -> None:
    """The placement attributes an instruction may carry, of the right kind."""
    hoisted = op.attributes.get(HOIST_ATTR)
    if hoisted is not None and (not isinstance(hoisted, UnitAttr) or op.name != "esact.load"):
        raise CompileError(f"esact-order: {op.name}: '{HOIST_ATTR}' marks LOADs only (a unit "
                           "attribute)")
    for name in (GROUP_ATTR, CYCLES_ATTR):
        value = op.attributes.get(name)
        if value is not None and not (isinstance(value, IntegerAttr) and value.value.data >= 0):
            raise CompileError(f"esact-order: {op.name}: '{name}' must be a non-negative integer")


def _group_of(op: Operation) -> int | None:
    group = op.attributes.get(GROUP_ATTR)
    return group.value.data if isinstance(group, IntegerAttr) else None


@dataclass
class _Ordering:
    """The program built so far and what the directives still refer to."""

    config: HardwareConfig
    program: list[Operation] = field(default_factory=list)
    before_label: dict[int, set[int]] = field(default_factory=dict)
    """Label -> ids of the program's instructions when the label was selected."""
    after_label: dict[int, Operation] = field(default_factory=dict)
    """Label -> the first instruction selected after it."""
    waiting: list[int] = field(default_factory=list)
    """Labels no instruction followed yet."""
    held: dict[int, list[Operation]] = field(default_factory=dict)
    late: dict[int, list[Operation]] = field(default_factory=dict)

    def instruction(self, op: Operation) -> None:
        _check_placement_attrs(op)
        for label in self.waiting:
            self.after_label[label] = op
        self.waiting.clear()
        self.program.append(op)
        if HOIST_ATTR in op.attributes:
            hoist(self.program)

    def label(self, op: LabelOp) -> None:
        label = op.id.value.data
        self.before_label[label] = {id(ins) for ins in self.program}
        self.waiting.append(label)

    def place(self, op: PlaceOp) -> None:
        policy, group = op.policy.data, op.group.value.data
        label = None if op.label is None else op.label.value.data
        if policy == "aside":
            # The group's instructions follow the last one selected before it, but for the
            # loads hoisted above that one: those stay where they are.
            program = self.program
            cut = len(program)
            while cut and _group_of(program[cut - 1]) == group:
                cut -= 1
            self.held[group] = program[cut:]
            del program[cut:]
            return
        if (policy != "sink" and group not in self.held) or \
                (label is not None and label not in self.before_label):
            raise CompileError(f"esact-order: 'place \"{policy}\" {group}' refers to a group "
                               "or label not selected before it")
        if policy == "append":
            self.program.extend(self.held.pop(group))
        elif policy == "interleave":
            self.late[group] = overlap.interleave(self.program, self.before_label[label],
                                                  self.held.pop(group), self.config)
        elif policy == "sink":
            overlap.sink(self.program, self.late.pop(group, []))
        elif policy == "early":
            body = self.held.pop(group)
            self.program.extend(body)
            overlap.move_early(self.program, body, self.after_label.get(label))
        elif policy == "follow":
            body = self.held.pop(group)
            self.program.extend(body)
            overlap.follow(self.program, body, self.after_label.get(label))
        else:  # prepare
            body = self.held.pop(group)
            self.program.extend(body)
            target = self.after_label.get(label)
            if body and target is None:
                raise CompileError(f"esact-order: 'place \"prepare\" {group} at {label}': no "
                                   "instruction follows the label")
            if body:
                overlap.hoist_preparation(self.program, body, target)
                overlap.chunk_major(self.program, body)


def order_module(module: ModuleOp, config: HardwareConfig) -> None:
    """Apply the module's placement directives (see the module docstring)."""
    ordering = _Ordering(config)
    declarations: list[Operation] = []
    ops = list(module.body.block.ops)
    for op in ops:  # the module is left as it was when a directive is refused
        if isinstance(op, (ReserveOp, ReleaseOp)):
            raise CompileError("esact-order: the program still has virtual buffers (run "
                               "esact-allocate-buffers first)")
        if isinstance(op, LabelOp):
            ordering.label(op)
        elif isinstance(op, PlaceOp):
            ordering.place(op)
        elif isinstance(op, esact.InstructionOp):
            ordering.instruction(op)
        else:
            declarations.append(op)
    if ordering.held:
        raise CompileError(f"esact-order: group(s) {', '.join(map(str, ordering.held))} held "
                           "aside are never placed")
    for op in ops:
        op.detach()
        if isinstance(op, (LabelOp, PlaceOp)):
            op.erase()
    for op in ordering.program:
        for name in PLACEMENT_ATTRS:
            op.attributes.pop(name, None)
    module.body.block.add_ops([*declarations, *ordering.program])


@dataclass(frozen=True)
class OrderPass(ModulePass):
    """Placement directives of an allocated esact program -> its program order."""

    name = "esact-order"

    hw: str | None = None
    """Hardware config (TOML path or bundled name): the one the program was selected for."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        config = resolve_config(self.hw)
        check_selected_for(op, config, self.name)
        order_module(op, config)
