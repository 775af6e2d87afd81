"""Analytic checks of the queue/token event simulation (runtime/timing.py simulate)."""

import itertools

import pytest
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.timing import QUEUE_NAMES, check_tokens, simulate
from hypothesis import given, settings
from hypothesis import strategies as st
from token_masks import draw_token_masks

LOAD, COMPUTE, PREDICT, SFU, STORE, HOST = range(6)


def m(*queues: int) -> int:
    return sum(1 << q for q in queues)


def test_queue_order_is_the_mask_bit_order():
    assert QUEUE_NAMES == ("load", "compute", "predict", "sfu", "store", "host")


def test_single_instruction_takes_its_cycles():
    s = simulate([COMPUTE], [0], [0], [1234])
    assert s.total_cycles == 1234
    assert s.busy_cycles["compute"] == 1234
    assert s.start == [0] and s.end == [1234]


@pytest.mark.parametrize("lat", [0, 1, 7])
def test_load_then_gemm_through_a_token_is_serial_plus_latency(lat):
    s = simulate([LOAD, COMPUTE], [0, m(LOAD)], [m(COMPUTE), 0], [300, 500], [250, 0], lat)
    assert s.total_cycles == 300 + lat + 500
    assert s.stall_cycles["compute"] == {"token:load": 300 + lat}


@pytest.mark.parametrize("load,gemm", [(300, 500), (900, 500), (500, 500)])
@pytest.mark.parametrize("lat", [1, 4])
def test_overlapped_load_and_gemm_take_the_max_plus_token_latency(load, gemm, lat):
    # LOAD and GEMM run concurrently; a 0-cycle store-queue instruction waits for both.
    s = simulate(
        [LOAD, COMPUTE, STORE],
        [0, 0, m(LOAD, COMPUTE)],
        [m(STORE), m(STORE), 0],
        [load, gemm, 0],
        None,
        lat,
    )
    assert s.total_cycles == max(load, gemm) + lat
    cause = "token:load" if load >= gemm else "token:compute"  # ties: lowest queue
    assert s.stall_cycles["store"] == {cause: max(load, gemm) + lat}


def test_prefetch_overlaps_next_load_with_current_gemm():
    # load0 -> gemm0 ; load1 runs while gemm0 computes; gemm1 waits for the later of both.
    L, G, lat = 200, 350, 2
    s = simulate(
        [LOAD, COMPUTE, LOAD, COMPUTE],
        [0, m(LOAD), 0, m(LOAD)],
        [m(COMPUTE), 0, m(COMPUTE), 0],
        [L, G, L, G],
        None,
        lat,
    )
    gemm0_end = L + lat + G
    assert s.end[1] == gemm0_end
    assert s.start[3] == max(gemm0_end, 2 * L + lat)
    assert s.total_cycles == max(gemm0_end, 2 * L + lat) + G


def test_tokens_are_consumed_in_fifo_order():
    # two loads push; the first gemm takes the first token, the second the second.
    s = simulate(
        [LOAD, LOAD, COMPUTE, COMPUTE],
        [0, 0, m(LOAD), m(LOAD)],
        [m(COMPUTE), m(COMPUTE), 0, 0],
        [100, 100, 10, 10],
        None,
        1,
    )
    assert s.start[2] == 101  # after load 0
    assert s.start[3] == 201  # after load 1 (not the free time 111 of the compute queue)


def test_instructions_of_one_queue_run_in_program_order():
    s = simulate([SFU, SFU, SFU], [0, 0, 0], [0, 0, 0], [5, 7, 11])
    assert s.start == [0, 5, 12]
    assert s.total_cycles == 23


def test_load_and_store_share_the_dram_port():
    # both DMA queues start at 0; the store waits for the load's transfer (not its latency).
    s = simulate([LOAD, STORE], [0, 0], [0, 0], [100 + 64, 100 + 32], [64, 32], 1)
    assert s.start == [0, 64]
    assert s.total_cycles == 64 + 132
    assert s.stall_cycles["store"] == {"dram": 64}
    assert s.dram_port_busy_cycles == 96


def test_back_to_back_loads_pipeline_the_latency():
    lat_dram, transfer, n = 100, 64, 5
    s = simulate([LOAD] * n, [0] * n, [0] * n, [lat_dram + transfer] * n, [transfer] * n, 1)
    # In-order queue: each load starts when the previous one finishes.
    assert s.total_cycles == n * (lat_dram + transfer)


def test_missing_push_is_a_deadlock_naming_the_instruction():
    with pytest.raises(ProgramError, match=r"instruction 1 \(compute queue\).*load"):
        simulate([LOAD, COMPUTE], [0, m(LOAD)], [0, 0], [10, 10])


def test_cyclic_wait_is_a_deadlock():
    # compute waits for sfu, sfu waits for compute: neither can start.
    with pytest.raises(ProgramError, match="deadlock"):
        check_tokens([COMPUTE, SFU], [m(SFU), m(COMPUTE)], [m(SFU), m(COMPUTE)])


def test_order_deadlock_across_queues():
    # compute's first instruction waits for the sfu token pushed by sfu's SECOND
    # instruction, which waits for a token from compute's second instruction.
    queues = [COMPUTE, COMPUTE, SFU, SFU]
    pops = [m(SFU), 0, m(COMPUTE), 0]
    pushes = [0, m(SFU), 0, m(COMPUTE)]
    with pytest.raises(ProgramError, match="instruction 0"):
        check_tokens(queues, pops, pushes)


def test_leftover_tokens_are_allowed():
    s = simulate([LOAD, COMPUTE], [0, 0], [m(COMPUTE), 0], [3, 4])
    assert s.total_cycles == 4


def test_stalls_plus_busy_fill_each_queue_until_its_last_instruction():
    queues = [LOAD, COMPUTE, LOAD, COMPUTE, STORE]
    pops = [0, m(LOAD), 0, m(LOAD), m(COMPUTE)]
    pushes = [m(COMPUTE), 0, m(COMPUTE), m(STORE), 0]
    cycles = [120, 80, 120, 80, 50]
    s = simulate(queues, pops, pushes, cycles, [60, 0, 60, 0, 25], 3)
    for q, name in enumerate(QUEUE_NAMES):
        ends = [s.end[i] for i in range(len(queues)) if queues[i] == q]
        if ends:
            assert s.busy_cycles[name] + sum(s.stall_cycles[name].values()) == max(ends)


# --- invariants over random valid programs -------------------------------------------------



@st.composite
def random_programs(draw):
    """Random token programs that the program-order execution satisfies (so no deadlock)."""
    n = draw(st.integers(1, 60))
    available = {}
    queues, pops, pushes, cycles, port = [], [], [], [], []
    for _ in range(n):
        q = draw(st.integers(0, 5))
        pop, push = draw_token_masks(draw, available, q, push_odds=3)
        c = draw(st.integers(1, 500))
        queues.append(q)
        pops.append(pop)
        pushes.append(push)
        cycles.append(c)
        port.append(draw(st.integers(0, c)) if q in (LOAD, STORE) else 0)
    return queues, pops, pushes, cycles, port, draw(st.integers(0, 5))


@settings(max_examples=100, deadline=None)
@given(random_programs())
def test_schedule_invariants(program):
    queues, pops, pushes, cycles, port, lat = program
    s = simulate(queues, pops, pushes, cycles, port, lat)
    n = len(queues)
    consumed = {}
    for producer, consumer in s.token_edges:
        consumed.setdefault(consumer, []).append(producer)
        assert queues[producer] != queues[consumer] or producer < consumer
        assert s.start[consumer] >= s.end[producer] + lat  # tokens are honoured
    for i in range(n):
        assert s.end[i] - s.start[i] == cycles[i]
        assert len(consumed.get(i, [])) == pops[i].bit_count()  # one token per popped queue
    previous = {}
    for i in range(n):  # in-order queues; no unexplained idle time before a non-DMA start
        q = queues[i]
        prev_end = s.end[previous[q]] if q in previous else 0
        assert s.start[i] >= prev_end
        if not port[i]:
            ready = max([prev_end] + [s.end[p] + lat for p in consumed.get(i, [])])
            assert s.start[i] == ready
        previous[q] = i
    spans = sorted((s.start[i], s.start[i] + port[i]) for i in range(n) if port[i])
    for (_, e0), (s1, _) in itertools.pairwise(spans):  # the DRAM port serves one at a time
        assert s1 >= e0
    per_queue = [sum(c for c, q in zip(cycles, queues) if q == k) for k in range(6)]
    assert s.total_cycles >= max(per_queue + [sum(port)])
