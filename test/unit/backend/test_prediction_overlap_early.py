"""`place "early"` (passes/prediction_overlap.py `move_early`): each held instruction moves back
toward the label's instruction just past the last one it shares a region with (one writing),
never past a HOST (which touches all memory) nor in front of the previous held one. The SPLS
chain uses it for the first LOAD into each per-query mask slot, so the in-order load queue
does not hold it behind the loads of the work lowered beside the projection."""

from __future__ import annotations

from esact_cc.dialects.esact import instruction_op
from esact_cc.passes.prediction_overlap import move_early
from esact_cc.runtime.isa import Buffer


def _load(at: int, rows: int = 1, buf: Buffer = Buffer.VBUF):
    return instruction_op("load", buf=buf, sram_addr=at, dram_addr=4096 + at, rows=rows, cols=64)


def _gemm(a_at: int):
    return instruction_op("gemm", acc_addr=0, a_addr=a_at, w_addr=0, m=1, k=64, n=64)


def test_held_loads_move_back_to_the_last_conflict_in_order() -> None:
    target = _load(0, buf=Buffer.ABUF)
    writes_slot = _load(1000)  # writes VBUF [1000, 1064): the first held load stops after it
    others = [_gemm(0), _load(2000), _gemm(64)]
    first, second = _load(1000), _load(3000)
    program = [target, _gemm(0), writes_slot, *others, first, second]
    move_early(program, [first, second], target)
    assert program.index(first) == program.index(writes_slot) + 1
    assert program.index(second) == program.index(first) + 1  # not in front of `first`
    free = _load(5000)
    program = [target, _gemm(0), *others, free]
    move_early(program, [free], target)
    assert program[0] is free  # nothing shares its region: up to the label's instruction


def test_a_host_instruction_stops_the_move() -> None:
    host = instruction_op("host", segment=0)
    load = _load(5000)
    program = [_load(0, buf=Buffer.ABUF), host, _gemm(0), load]
    move_early(program, [load], None)
    assert program.index(load) == program.index(host) + 1
