"""The cost stage computes each opcode's cycles column-wise (instruction_costs: one cost call
per opcode over int64 columns of its instructions' fields and work); on random programs of
every ISA instruction, with random fields and work records, under both MAC dataflows, it gives
exactly the per-instruction reference (reference_costs: one cost call per instruction on its
own record), and the timing model built on it (time_program) the reference schedule."""

from __future__ import annotations

from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.instruction_costs import instruction_costs
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Instruction, Work
from esact_cc.runtime.timing import time_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_timing import reference_costs, reference_simulate
from test_timing_matches_reference import schedule_facts

CONFIGS = (HardwareConfig(), HardwareConfig(mac_dataflow="weight_stationary"))
OPCODES = sorted(INSTRUCTION_SPECS)
COUNTS = tuple(name for name in Work.__dataclass_fields__
               if name not in ("sram_read_bytes", "sram_write_bytes"))
# zero and one often (empty masks, flags), large counts sometimes
VALUE = st.one_of(st.sampled_from((0, 1)), st.integers(0, 300), st.integers(0, 1 << 24))


@st.composite
def instruction(draw: st.DrawFn) -> tuple[Instruction, Work]:
    name = draw(st.sampled_from(OPCODES))
    fields = {f.name: draw(VALUE) & ((1 << f.bits) - 1) for f in INSTRUCTION_SPECS[name].fields}
    work = Work(**{count: draw(VALUE) for count in COUNTS},
                sram_read_bytes={"ABUF": draw(VALUE)}, sram_write_bytes={"VBUF": draw(VALUE)})
    return Instruction.make(name, **fields), work


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(instruction(), max_size=40), st.sampled_from(CONFIGS))
def test_column_costs_equal_per_instruction_costs(program: list, config: HardwareConfig) -> None:
    instructions = [instr for instr, _ in program]
    works = [work for _, work in program]
    columns = [c.tolist() for c in instruction_costs(instructions, works, config)]
    assert columns == list(reference_costs(instructions, works, config))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(instruction(), max_size=40), st.sampled_from(CONFIGS))
def test_time_program_equals_reference_on_tokens_that_complete(program: list,
                                                               config: HardwareConfig) -> None:
    """Random pop masks rarely complete; keep each pop only if its token was pushed before
    (in program order), so the schedule is compared, not only the deadlock."""
    pending: dict[tuple[int, int], int] = {}
    instructions, works = [], []
    for instr, work in program:
        fields = dict(instr.fields)
        queue = int(INSTRUCTION_SPECS[instr.opcode_name].queue)
        pop = 0
        for src in range(6):
            if fields["pop"] >> src & 1 and pending.get((src, queue), 0):
                pending[(src, queue)] -= 1
                pop |= 1 << src
        for dst in range(6):
            if fields["push"] >> dst & 1:
                pending[(queue, dst)] = pending.get((queue, dst), 0) + 1
        fields["pop"] = pop
        instructions.append(Instruction.make(instr.opcode_name, **fields))
        works.append(work)
    timed = time_program(instructions, works, config)
    costs = reference_costs(instructions, works, config)
    assert schedule_facts(timed.schedule) == schedule_facts(
        reference_simulate(*costs, config.token_latency_cycles))
    assert timed.opcodes == [i.opcode_name for i in instructions]
