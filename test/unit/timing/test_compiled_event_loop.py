"""The compiled event simulation (runtime/_timing_loop.c, timing_events.run_events) gives exactly
what the Python code it replaced (timing_events_python.run_events_python, the reference) gives:
the same start and end times, final queue heads, processing order, ready times, stalls and
busy cycles on random token programs (deadlocks and latency 0 included), the same schedules (cycles, stall causes, token edges) on
random programs of every opcode, and the same esact-run report (cycles, stalls, energy) on
every golden binary case. Without the compiled module the timing model stops with one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime import timing, timing_events, timing_events_python
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
    heap_queues = range(NQ) if lat < 1 else np.unique(queues[dram > 0]).tolist()
    events = run(queues, pops, pushes, cycles, dram, NQ, heap_queues, lat)
    timed = events.processed.tolist()
    finished = len(timed) == len(queues)
    # start of an instruction never timed is not defined, nor stalls of an unfinished run
    return ([int(events.start[i]) for i in timed], events.end.tolist(), list(events.head),
            timed, events.ready.tolist() if finished else None,
            events.stall.tolist() if finished else None,
            events.busy.tolist() if finished else None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_program(), st.sampled_from((0, 1, 3)))
def test_compiled_loop_equals_python_loop(program: tuple[list[int], ...], lat: int) -> None:
    assert loop_outputs(timing_events.run_events, program, lat) == loop_outputs(
        timing_events_python.run_events_python, program, lat)


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
        patch.setattr(timing, "run_events", timing_events_python.run_events_python)
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
        patch.setattr(timing, "run_events", timing_events_python.run_events_python)
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
        patch.setattr(timing, "run_events", timing_events_python.run_events_python)
        reference = timed()
    assert compiled.report == reference.report
    assert schedule_facts(compiled.schedule) == schedule_facts(reference.schedule)
    assert compiled.report["total"]["cycles"] > 0


def test_loop_arguments_are_checked() -> None:
    """The compiled code indexes with what it is given: bad queues and masks are refused."""
    n = 2
    good = {"queues": [0, 1], "pops": [0, 1], "pushes": [2, 0], "cycles": [1, 1],
            "dram": [0, 0]}

    def run(dtype: type = np.int64, lat: int = 1, stall: tuple = (NQ, NQ + 1),
            **changed) -> int:
        arrays = [np.asarray(v, dtype=dtype) for v in {**good, **changed}.values()]
        return timing_events.compiled_loop.run_events(
            *arrays, 0, lat, np.zeros(NQ, np.int64), np.zeros(n, np.int64),
            np.zeros(n + 2, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(stall, np.int64), np.zeros(NQ, np.int64))

    assert run() == n
    for name, value in (("queues", [0, NQ]), ("queues", [-1, 0]), ("pops", [1 << NQ, 0]),
                        ("pushes", [0, -1])):
        with pytest.raises(ValueError, match=rf"{name}\[\d\] = -?\d+ is out of range"):
            run(**{name: value})
    with pytest.raises(ValueError, match="cycles has 1 entries"):
        run(cycles=[1])
    with pytest.raises(ValueError, match="stall has 6 entries"):
        run(stall=(NQ,))
    with pytest.raises(ValueError, match="lat"):
        run(lat=-1)
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
