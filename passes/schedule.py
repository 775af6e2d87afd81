"""`schedule`: dependency tokens for an `esact` program, so the queues overlap safely.

Every instruction's memory operands come from the ISA table (`isa.footprint`, the analysis the
lowering orders instructions with too: buffer regions in elements, DRAM regions in bytes); a HOST instruction touches the DRAM tensors bound
to its segment (`esact.host_tensor`), and `halt` waits for the last instruction of every other
queue. `token_assignment.assign_tokens` then orders every cross-queue read/write conflict with
one token pair (see there for why the result cannot deadlock); DRAM that no instruction writes
(weights, constants, inputs) is not tracked, since reading it never conflicts.

The pass rewrites the `pop`/`push` fields of every instruction op (previous values are
replaced, so running it twice gives the same program).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from esact_cc.dialects import esact
from esact_cc.runtime.isa import Extent, Queue, footprint
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.passes import ModulePass

from esact_cc import tensor_types
from esact_cc.backend.token_assignment import Access, Region, assign_tokens
from esact_cc.collector_pause import collector_paused

DRAM = "dram"


def _tensor_region(op: esact.HostTensorOp) -> Region:
    typ = op.tensor_type
    assert isinstance(typ, TensorType)
    nbytes = tensor_types.numpy_dtype_of(typ).itemsize
    for d in typ.get_shape():
        nbytes *= d
    start = op.address.value.data
    return Region(DRAM, start, start + nbytes)


def _region(extent: Extent) -> Region:
    buf, start, end = extent
    return Region(DRAM if buf is None else buf.name, start, end)


def program_accesses(module: ModuleOp) -> tuple[list[esact.InstructionOp], list[Access]]:
    """The instruction ops of `module` in program order and what each reads and writes."""
    host_reads: dict[int, list[Region]] = {}
    host_writes: dict[int, list[Region]] = {}
    instrs: list[esact.InstructionOp] = []
    for op in module.body.block.ops:
        if isinstance(op, esact.HostTensorOp):
            table = host_reads if op.kind.data == "input" else host_writes
            table.setdefault(op.segment.value.data, []).append(_tensor_region(op))
        elif isinstance(op, esact.InstructionOp):
            instrs.append(op)
    accesses: list[Access] = []
    # Equal instructions touch equal regions: about half of a BERT-base program repeats an
    # earlier instruction's fields, so each distinct one's footprint is derived once.
    touched_by: dict[tuple[str, tuple[int, ...]], tuple[list[Region], list[Region]]] = {}
    for op in instrs:
        spec = op.isa_spec()
        instr = op.to_instruction()
        key = (spec.name, tuple(instr.fields.values()))
        regions = touched_by.get(key)
        if regions is None:
            touched = footprint(instr)
            regions = touched_by[key] = ([_region(extent) for extent in touched.reads],
                                         [_region(extent) for extent in touched.writes])
        reads, writes = regions
        if spec.name == "host":
            segment = instr["segment"]
            reads = reads + host_reads.get(segment, [])
            writes = writes + host_writes.get(segment, [])
        accesses.append(Access(int(spec.queue), reads, writes, barrier=spec.name == "halt"))
    return instrs, accesses


def _drop_read_only_dram(accesses: list[Access]) -> None:
    """Forget DRAM reads of bytes no instruction writes: they cannot conflict."""
    spans = sorted((r.start, r.end) for a in accesses for r in a.writes if r.space == DRAM)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = [m[0] for m in merged]

    def written(r: Region) -> bool:
        i = bisect.bisect_right(starts, r.end - 1) - 1
        return i >= 0 and merged[i][1] > r.start

    for a in accesses:
        a.reads = [r for r in a.reads if r.space != DRAM or written(r)]


@collector_paused()  # esact_cc/collector_pause.py: full collections walk the whole IR
def schedule_module(module: ModuleOp) -> None:
    instrs, accesses = program_accesses(module)
    _drop_read_only_dram(accesses)
    for op, tokens in zip(instrs, assign_tokens(accesses)):
        op.set_field("pop", sum(1 << q for q in tokens.pop))
        op.set_field("push", sum(1 << q for q in tokens.push))


@dataclass(frozen=True)
class SchedulePass(ModulePass):
    """Fill every esact instruction's pop/push token masks from its memory conflicts."""

    name = "schedule"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        schedule_module(op)


__all__ = ["Queue", "SchedulePass", "program_accesses", "schedule_module"]
