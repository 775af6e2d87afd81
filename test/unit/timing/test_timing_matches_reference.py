"""The fast timing model (column-wise costs, static token matching, one heap entry per queue
head with an inline fast path) gives exactly the reference model's costs and schedules: on
random token programs (deadlocks included), on the timing bench's synthetic stream and on
compiled programs, dense and SPLS, run through the functional model."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
from reference_timing import reference_costs, reference_simulate

from esact_cc import api
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.timing import QUEUE_NAMES, Schedule, instruction_costs, simulate

ROOT = Path(__file__).resolve().parents[3]
CONFIG = load_config()
NQ = len(QUEUE_NAMES)


def schedule_facts(s: Schedule) -> dict:
    return {
        "start": list(s.start), "end": list(s.end), "total": s.total_cycles,
        "busy": s.busy_cycles, "stalls": s.stall_cycles, "counts": s.instruction_counts,
        "dram": s.dram_port_busy_cycles, "queues": list(s.queues), "cycles": list(s.cycles),
        "edges": s.token_edges,
    }


def outcome(function, *args) -> dict | str:
    try:
        return schedule_facts(function(*args))
    except ProgramError as e:
        return f"ProgramError: {e}"


def random_program(rng: random.Random, n: int, feasible: bool) -> tuple[list, ...]:
    """Random queues, tokens, cycles (many ties) and DRAM use. A feasible program pops only
    tokens pushed earlier in program order (so it completes); otherwise pops are random and
    the program usually deadlocks somewhere."""
    queues = [rng.randrange(NQ) for _ in range(n)]
    pushes = [sum(1 << b for b in range(NQ) if rng.random() < 0.5) for _ in range(n)]
    pending = [[0] * NQ for _ in range(NQ)]  # pending[src][dst]: tokens pushed, not popped
    pops = []
    for q, push in zip(queues, pushes):
        pop = sum(1 << b for b in range(NQ) if rng.random() < 0.5 and (
            not feasible or pending[b][q]))
        for b in range(NQ):
            pending[b][q] -= pop >> b & 1
            pending[q][b] += push >> b & 1
        pops.append(pop)
    cycles = [rng.choice((0, 1, 1, 2, 3, 40)) for _ in range(n)]
    dram = [rng.choice((0, c)) if q in (0, 4) else 0 for q, c in zip(queues, cycles)]
    return queues, pops, pushes, cycles, dram


def random_case(seed: int) -> tuple[tuple[list, ...], int]:
    rng = random.Random(seed)
    program = random_program(rng, rng.choice((1, 7, 60, 400)), rng.random() < 0.75)
    return program, rng.choice((0, 1, 3))


@pytest.mark.parametrize("seed", range(60))
def test_random_programs_schedule_identically(seed: int) -> None:
    program, latency = random_case(seed)
    assert outcome(simulate, *program, latency) == outcome(reference_simulate, *program, latency)


def test_random_programs_cover_completion_and_deadlock() -> None:
    deadlocked = [isinstance(outcome(simulate, *random_case(seed)[0]), str) for seed in range(60)]
    assert 10 <= sum(deadlocked) <= 50


def bench_program(n: int) -> tuple[list, list]:
    spec = importlib.util.spec_from_file_location("bench_timing", ROOT / "bench" / "bench_timing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_program(n)


def assert_same_timing(instructions: list, works: list) -> None:
    costs = instruction_costs(instructions, works, CONFIG)
    assert [c.tolist() for c in costs] == list(reference_costs(instructions, works, CONFIG))
    latency = CONFIG.token_latency_cycles
    assert schedule_facts(simulate(*costs, latency)) == schedule_facts(
        reference_simulate(*costs, latency))


def test_bench_stream_times_identically() -> None:
    assert_same_timing(*bench_program(3000))


@pytest.mark.parametrize("sparsity", ["dense", "spls"])
def test_compiled_program_times_identically(sparsity: str) -> None:
    fixtures = ROOT / "test" / "fixtures" / "models"
    compiled = api.compile(str(fixtures / "bert_tiny_legacy17.onnx"), stage="esb",
                           sparsity=sparsity)
    program = compiled.program()
    inputs = dict(np.load(fixtures / "bert_tiny_legacy17.inputs.npz"))
    work = execute(program, inputs, CONFIG).work
    assert len(program.instructions) > 100
    assert_same_timing(program.instructions, work)


def test_empty_program_times_identically() -> None:
    assert outcome(simulate, [], [], [], [], [], 1) == outcome(reference_simulate, [], [], [], [],
                                                                [], 1)
    assert [c.tolist() for c in instruction_costs([], [], CONFIG)] == list(
        reference_costs([], [], CONFIG))
