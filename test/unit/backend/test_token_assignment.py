"""assign_tokens: on random multi-queue programs, every schedule the tokens allow runs without
deadlock and orders every conflicting pair; an independent random-interleaving simulator
checks it (instructions start and end as separate events, tokens are pushed at the end)."""

from __future__ import annotations

import random

import pytest

from esact_cc.backend.token_assignment import Access, Region, assign_tokens

QUEUES = 6
SPACES = ("WBUF", "ABUF", "dram")


def random_program(rng: random.Random, n: int) -> list[Access]:
    program = []
    for _ in range(n):
        def regions(count: int) -> list[Region]:
            out = []
            for _ in range(count):
                start = rng.randrange(0, 64)
                out.append(Region(rng.choice(SPACES), start, start + rng.randrange(1, 16)))
            return out

        program.append(Access(rng.randrange(QUEUES), regions(rng.randrange(0, 3)), regions(rng.randrange(0, 2))))
    program.append(Access(1, barrier=True))  # halt
    return program


def conflicts(a: Access, b: Access) -> bool:
    def overlap(x: Region, y: Region) -> bool:
        return x.space == y.space and x.start < y.end and y.start < x.end

    return any(overlap(w, r) for w in a.writes for r in (*b.reads, *b.writes)) or any(
        overlap(w, r) for w in b.writes for r in a.reads
    )


def simulate(program: list[Access], tokens, rng: random.Random) -> tuple[dict[int, int], dict[int, int]]:
    """Random legal execution: returns start and end times, or raises on deadlock."""
    order = {q: [i for i, a in enumerate(program) if a.queue == q] for q in range(QUEUES)}
    head = {q: 0 for q in range(QUEUES)}
    running: dict[int, int] = {}  # queue -> instruction
    channel = {(s, d): 0 for s in range(QUEUES) for d in range(QUEUES)}
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    clock = 0
    while len(end) < len(program):
        actions = []
        for q in range(QUEUES):
            if q in running:
                actions.append(("end", q))
            elif head[q] < len(order[q]):
                i = order[q][head[q]]
                if all(channel[(s, q)] > 0 for s in tokens[i].pop):
                    actions.append(("start", q))
        assert actions, f"deadlock with {len(end)} of {len(program)} done"
        kind, q = rng.choice(actions)
        clock += 1
        if kind == "start":
            i = order[q][head[q]]
            for s in tokens[i].pop:
                channel[(s, q)] -= 1
            running[q] = i
            start[i] = clock
        else:
            i = running.pop(q)
            for d in tokens[i].push:
                channel[(q, d)] += 1
            end[i] = clock
            head[q] += 1
    return start, end


@pytest.mark.parametrize("seed", range(40))
def test_random_programs_are_ordered_and_deadlock_free(seed: int) -> None:
    rng = random.Random(seed)
    program = random_program(rng, rng.randrange(5, 60))
    tokens = assign_tokens(program)
    for i, t in enumerate(tokens):
        assert program[i].queue not in t.pop | t.push
    for _ in range(5):
        start, end = simulate(program, tokens, rng)
        for j, b in enumerate(program):
            for i in range(j):
                a = program[i]
                if a.queue != b.queue and conflicts(a, b):
                    assert end[i] <= start[j], f"instructions {i} and {j} conflict but may overlap"
        last = len(program) - 1
        assert all(end[i] <= start[last] for i in range(last))


def test_independent_work_gets_no_tokens() -> None:
    program = [
        Access(0, writes=[Region("WBUF", 0, 8)]),
        Access(0, writes=[Region("WBUF", 8, 16)]),
        Access(1, reads=[Region("WBUF", 0, 8)]),
        Access(1, reads=[Region("WBUF", 8, 16)]),
    ]
    tokens = assign_tokens(program)
    # Each reader waits for its own load; the loads themselves never wait.
    assert [sorted(t.pop) for t in tokens] == [[], [], [0], [0]]
    assert [sorted(t.push) for t in tokens] == [[1], [1], [], []]
