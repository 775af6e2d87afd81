"""The compiled event loop (runtime/_timing_loop.c, timing_events.run_events) gives exactly what
the Python loop it replaced (timing_events.run_events_python, the reference) gives: the same
start and end times, final queue heads and processing order on random token programs
(deadlocks and latency 0 included), the same schedules (cycles, stall causes, token edges) on
random programs of every opcode, and the same esact-run report (cycles, stalls, energy) on
every golden binary case. Without the compiled module the timing model stops with one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime import timing, timing_events
from esact_cc.runtime.errors import InstallError, ProgramError
from esact_cc.runtime.esb import write_esb
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.report import instruction_info
from esact_cc.runtime.run_program import time_and_report
from esact_cc.runtime.timing import QUEUE_NAMES, simulate, time_program
from esact_cc.runtime.work_table import WorkTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cost_columns_match_reference import CONFIGS, instruction
from test_esact_run_cli import gemm_program
from test_timing_matches_reference import schedule_facts

ROOT = Path(__file__).resolve().parents[3]
NQ = len(QUEUE_NAMES)
DMA = (0, 4)  # load, store: the queues using the DRAM port


@st.composite
def token_program(draw: st.DrawFn) -> tuple[list[int], ...]:
    """Random queues, masks (up to all six pops: the extra-producer path), cycles with many
    ties, DRAM port use on the DMA queues; pops mostly of tokens pushed before in program
    order so most programs complete, some at random so some deadlock."""
    n = draw(st.integers(0, 60))
    queues = draw(st.lists(st.integers(0, NQ - 1), min_size=n, max_size=n))
    pushes = draw(st.lists(st.integers(0, (1 << NQ) - 1), min_size=n, max_size=n))
    feasible = draw(st.booleans())
    pending = [[0] * NQ for _ in range(NQ)]
    pops = []
    for q, push in zip(queues, pushes):
        wanted = draw(st.integers(0, (1 << NQ) - 1))
        pop = sum(1 << b for b in range(NQ) if wanted >> b & 1 and (
            not feasible or pending[b][q]))
        for b in range(NQ):
            pending[b][q] -= pop >> b & 1
            pending[q][b] += push >> b & 1
        pops.append(pop)
    cycles = draw(st.lists(st.sampled_from((0, 1, 2, 3, 40, 1 << 40)), min_size=n, max_size=n))
    dram = [draw(st.sampled_from((0, c))) if q in DMA else 0 for q, c in zip(queues, cycles)]
    return queues, pops, pushes, cycles, dram


def loop_outputs(run, program: tuple[list[int], ...], lat: int) -> tuple[list[int], ...]:
    queues, pops, pushes, cycles, dram = (np.asarray(a, dtype=np.int64) for a in program)
    producer = timing_events.match_tokens(queues, pops, pushes, NQ)
    heap_queues = range(NQ) if lat < 1 else np.unique(queues[dram > 0]).tolist()
    start, end, head, processed = run(queues, pops, pushes, cycles, dram, producer,
                                      heap_queues, lat)
    timed = list(processed)
    # start of an instruction never timed is not defined: compare the timed ones
    return ([int(start[i]) for i in timed], [int(e) for e in end], list(head), timed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_program(), st.sampled_from((0, 1, 3)))
def test_compiled_loop_equals_python_loop(program: tuple[list[int], ...], lat: int) -> None:
    assert loop_outputs(timing_events.run_events, program, lat) == loop_outputs(
        timing_events.run_events_python, program, lat)


def outcome(program: tuple[list[int], ...], lat: int) -> dict | str:
    try:
        return schedule_facts(simulate(*program, lat))
    except ProgramError as e:
        return f"ProgramError: {e}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_program(), st.sampled_from((0, 1, 3)))
def test_simulate_with_either_loop_is_the_same(program: tuple[list[int], ...], lat: int) -> None:
    compiled = outcome(program, lat)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing, "run_events", timing_events.run_events_python)
        assert outcome(program, lat) == compiled


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(instruction(), max_size=40), st.sampled_from(CONFIGS))
def test_every_opcode_times_the_same(program: list, config) -> None:
    """Random instructions of every opcode (pops as drawn: most of these deadlock, which both
    loops must report alike) with their ISA costs."""
    instructions, works = [i for i, _ in program], [w for _, w in program]

    def timed() -> dict | str:
        try:
            return schedule_facts(time_program(instructions, works, config).schedule)
        except ProgramError as e:
            return f"ProgramError: {e}"

    compiled = timed()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing, "run_events", timing_events.run_events_python)
        assert timed() == compiled


def golden_cases():  # type: ignore[no-untyped-def]
    """test/e2e/test_golden_binaries.py: its cases and how it compiles them."""
    path = ROOT / "test" / "e2e" / "test_golden_binaries.py"
    spec = importlib.util.spec_from_file_location("golden_binary_cases", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


GOLDEN = golden_cases()


def case_inputs(options: dict) -> dict[str, np.ndarray]:
    model = Path(options["model"])
    if model.parent == GOLDEN.FIXTURES:
        return dict(np.load(model.with_suffix(".inputs.npz")))
    from esact_cc.bundled_model import load_bundled_model

    bundled = load_bundled_model()
    return {bundled.input_name: bundled.test_images[:1]}


@pytest.mark.parametrize("name", sorted(GOLDEN.cases()))
def test_golden_case_reports_the_same(tmp_path: Path, name: str) -> None:
    """esact-run's report (cycles, stalls, energy, ...) and the schedule of every golden
    binary, timed by either loop."""
    options = GOLDEN.cases()[name]
    program = GOLDEN.compile_case(tmp_path, options).program()
    config = load_config()
    execution = execute(program, case_inputs(options), config)
    work, info = WorkTable.from_records(execution.work), instruction_info(program)

    def timed():  # type: ignore[no-untyped-def]
        return time_and_report(program, execution.outputs, execution.work, work, info, config,
                               {})

    compiled = timed()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing, "run_events", timing_events.run_events_python)
        reference = timed()
    assert compiled.report == reference.report
    assert schedule_facts(compiled.schedule) == schedule_facts(reference.schedule)
    assert compiled.report["total"]["cycles"] > 0


def test_loop_arguments_are_checked() -> None:
    """The compiled loop indexes with what it is given: out-of-range indices are refused."""
    n = 2  # instruction 0 on the load queue, 1 on compute; no tokens
    good = {"queue_of": [0, 1], "first": [3, 3, 2], "more": [0, 0, 0],
            "extra_start": [0, 0, 0], "extra_flat": [], "following": [2, 2], "cycle": [1, 1],
            "port": [0, 0], "wake": [0, 0]}

    def run(dtype: type = np.int64, **changed) -> int:
        arrays = [np.asarray(v, dtype=dtype) for v in {**good, **changed}.values()]
        head = np.array([0, 1] + [n] * (NQ - 2), dtype=np.int64)
        return timing_events.compiled_loop.run_events(
            *arrays, 0, 1, head, np.zeros(n, np.int64), np.zeros(n + 2, np.int64),
            np.zeros(n, np.int64))

    assert run() == n
    for name, value in (("first", [5, 3, 2]), ("first", [3, 3, 3]), ("following", [3, 2]),
                        ("queue_of", [0, NQ]), ("extra_start", [0, 0, -1]),
                        ("extra_start", [0, 1, 1]), ("wake", [1 << NQ, 0])):
        with pytest.raises(ValueError, match=name):
            run(**{name: value})
    with pytest.raises(ValueError, match="extra_start"):  # three pops, no third producer
        run(more=[0, -1, 0])
    with pytest.raises(ValueError, match="cycle has 1 entries"):
        run(cycle=[1])
    with pytest.raises(TypeError, match="int64"):
        run(np.int32)


def test_times_near_int64_are_refused() -> None:
    with pytest.raises(ProgramError, match="too large to time"):
        simulate([0, 1], [0, 1], [2, 0], [1 << 61, 1 << 61])


def test_without_the_compiled_loop_the_error_says_how_to_build_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing_events, "compiled_loop", None)
    monkeypatch.setattr(timing_events, "compiled_loop_missing", "No module named x", raising=False)
    with pytest.raises(InstallError, match=r"not importable \(No module named x\).*pip install"):
        time_program([], [], load_config())


def test_esact_run_without_the_compiled_loop_stops_with_one_line(tmp_path: Path) -> None:
    """A whole esact-run process in which the module cannot be imported."""
    write_esb(gemm_program()[0], tmp_path / "gemm.esb")
    np.save(tmp_path / "x.npy", np.zeros((32, 64), np.int8))
    blocked = ("import sys; sys.modules['esact_cc.runtime._timing_loop'] = None; "
               "from esact_cc.runtime.cli.esact_run_main import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", blocked, str(tmp_path / "gemm.esb"), "--input",
         f"x={tmp_path / 'x.npy'}", "--quiet", "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("esact-run: error: the timing model's compiled event loop is "
                                  "not importable (import of esact_cc.runtime._timing_loop "
                                  "halted; None in sys.modules); build it"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "pip install -e ." in proc.stderr
    assert not (tmp_path / "r.json").exists()
