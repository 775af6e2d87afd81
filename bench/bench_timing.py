"""Timing-model throughput: simulated instructions per second of CPU time.

Two instruction streams with work records, timed without functional execution (this measures
the timing model only):
  synthetic   BERT-shaped real ISA instructions: per block a double-buffered load of
              activations and weights, a GEMM (some masked), an SFU op, a store, with the
              tokens a compiler would insert, and every 16th block an SPLS prediction group;
  compiled    test/fixtures/models/bert_tiny_legacy17.onnx compiled (dense and SPLS) and run
              once through the functional model, its instructions and work records tiled.
Stages, timed separately (best of --repeat, CPU seconds of this process: the machine is
shared, so wall time mostly measures the other processes; wall time is reported too):
  work_table  work records -> columns (WorkTable.from_records; built once per run and shared
              by the timing, energy and report code)
  timing      timing.time_program with those columns: the timing model as esact-run runs it
              (run_program.time_and_report); the headline figure
  costs       of which per-instruction cycles from the ISA cost table (instruction_costs)
  simulate    of which the event simulation over those arrays (timing.simulate; its token
              matching, event loop and stall causes are compiled C, runtime/_timing_loop.c:
              the module used is printed)
  report      energy by component + report (report.build_report)
Target (issue 16): >= 1,000,000 instructions per CPU second for timing.
--baseline COMMIT also times the timing model as it was at COMMIT (runtime/timing.py and,
if there, runtime/timing_events.py, git show, and the C extensions the commit's pyproject
declares in esact_cc.runtime, compiled from the commit's source), alternating with the
working tree's in this process, so both see the same machine load.

Run:  python bench/bench_timing.py [--instructions 1000000] [--repeat 3] [--streams ...]
      [--baseline COMMIT] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).parent))
from source_tree_package import build_extension, declared_depends, declared_extensions

TARGET_PER_SECOND = 1_000_000
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "test" / "fixtures" / "models" / "bert_tiny_legacy17"


def synthetic_program(n_instructions: int, seed: int = 0):
    from esact_cc.runtime.isa import Buffer, Instruction, Queue, Work

    rng = random.Random(seed)

    def mask(*queues) -> int:  # type: ignore[no-untyped-def]
        return sum(1 << int(q) for q in queues)

    instrs: list = []
    works: list = []

    def add(instr, work):
        instrs.append(instr)
        works.append(work)

    block = 0
    while len(instrs) < n_instructions:
        m, k, n = 128, 768, rng.choice((64, 128, 256))
        first = block == 0
        # activations + weights: the second load tells compute both are in (in-order queue);
        # it waits for compute to release the buffer half it overwrites (double buffering).
        add(Instruction.make("load", buf=int(Buffer.ABUF), rows=m, cols=k),
            Work(dram_read_bytes=m * k, sram_write_bytes={"ABUF": m * k}))
        add(Instruction.make("load", buf=int(Buffer.WBUF), rows=k, cols=n,
                             pop=0 if block < 2 else mask(Queue.COMPUTE),
                             push=mask(Queue.COMPUTE)),
            Work(dram_read_bytes=k * n, sram_write_bytes={"WBUF": k * n}))
        rows = m if rng.random() < 0.6 else rng.randint(m // 4, m)
        add(Instruction.make("gemm", m=m, k=k, n=n, pop=mask(Queue.LOAD),
                             push=mask(Queue.LOAD, Queue.SFU)),
            Work(macs_dense=m * k * n, macs_executed=rows * k * n, rows_total=m,
                 rows_executed=rows, cols_total=n, cols_executed=n,
                 sram_read_bytes={"ABUF": rows * k, "WBUF": k * n},
                 sram_write_bytes={"ACC": 4 * rows * n}))
        op = rng.choice(("requant", "softmax", "layernorm", "gelu", "add"))
        add(Instruction.make(op, rows=m, cols=n, pop=mask(Queue.COMPUTE),
                             push=mask(Queue.STORE)),
            Work(sfu_elements=m * n, sram_read_bytes={"ACC": 4 * m * n},
                 sram_write_bytes={"VBUF": 4 * m * n}))
        add(Instruction.make("store", buf=int(Buffer.VBUF), rows=m, cols=n,
                             pop=mask(Queue.SFU)),
            Work(dram_write_bytes=4 * m * n, sram_read_bytes={"VBUF": 4 * m * n}))
        if block % 16 == 0 and not first:
            add(Instruction.make("bpu", m=m, k=k, n=64), Work(shift_adds=m * k * 64))
            add(Instruction.make("topk", rows=m, cols=m, k=16), Work(compare_ops=m * m * 4))
        block += 1
    instrs = instrs[:n_instructions]
    works = works[:n_instructions]
    # Every pop consumes a token pushed earlier in program order, so any prefix is valid.
    instrs.append(Instruction.make("halt"))
    works.append(Work())
    return instrs, works


def compiled_program(n_instructions: int, sparsity: str):
    """The fixture BERT compiled with `sparsity`, executed once, tiled to n instructions."""
    import numpy as np
    from esact_cc.runtime.functional import execute
    from esact_cc.runtime.hw_config import load_config

    from esact_cc import api

    program = api.compile(f"{FIXTURE}.onnx", stage="esb", sparsity=sparsity).program()
    work = execute(program, dict(np.load(f"{FIXTURE}.inputs.npz")), load_config()).work
    copies = -(-n_instructions // len(program.instructions))
    return list(program.instructions) * copies, list(work) * copies


STAGES = ("work_table", "timing", "costs", "simulate", "report")
BASELINE_MODULES = ("timing_events", "timing")  # runtime/ modules loaded from --baseline


def git_show(commit: str, path: str) -> str | None:
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
                           check=False, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def baseline_extensions(commit: str, where: Path) -> list[str]:
    """Compile the commit's C extensions of esact_cc.runtime into `where` (put on sys.path)
    as top-level modules; their names."""
    pyproject = git_show(commit, "pyproject.toml") or ""
    declared, depends = declared_extensions(pyproject), declared_depends(pyproject)
    names = []
    for module, source in declared.items():
        package, _, name = module.rpartition(".")
        if package == "esact_cc.runtime":
            (where / f"{name}.c").write_text(git_show(commit, source) or "")
            for header in depends[module]:  # included from beside the source
                (where / Path(header).name).write_text(git_show(commit, header) or "")
            build_extension(where / f"{name}.c", name, where, where / "build")
            names.append(name)
    if names:
        sys.path.insert(0, str(where))
    return names


def baseline_timing(commit: str) -> ModuleType:
    """The timing model as at `commit`, loaded beside the installed one: BASELINE_MODULES
    and the C extensions they import from the commit (those it has), their other relative
    imports resolved against the installed esact_cc."""
    where = Path(tempfile.mkdtemp(prefix="timing_baseline_"))
    extensions = baseline_extensions(commit, where)
    module = None
    for name in BASELINE_MODULES:
        source = git_show(commit, f"runtime/{name}.py")
        if source is None:
            continue
        for own in BASELINE_MODULES:
            source = source.replace(f"\nfrom .{own} import", f"\nfrom {own}_baseline import")
        for extension in extensions:
            source = source.replace(f"from . import {extension}", f"import {extension}")
        source = (source.replace("\nfrom ..", "\nfrom esact_cc.")
                  .replace("\nfrom .", "\nfrom esact_cc.runtime."))
        path = where / f"{name}_baseline.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"{name}_baseline", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look it up
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    if module is None:
        raise SystemExit(f"--baseline: no runtime/timing.py at {commit}")
    return module


def measure(instrs: list, works: list, repeat: int, timing: ModuleType | None = None) -> dict:
    from esact_cc.runtime import timing as installed
    from esact_cc.runtime.energy import EnergyModel
    from esact_cc.runtime.hw_config import load_config
    from esact_cc.runtime.report import InstructionInfo, build_report
    from esact_cc.runtime.work_table import WorkTable

    model = timing or installed
    events = sys.modules[model.run_events.__module__]
    config = load_config()
    n = len(instrs)
    cpu = {stage: float("inf") for stage in STAGES}
    wall = dict(cpu)
    report = None

    def clocks() -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    for _ in range(repeat):
        marks = [clocks()]
        table = WorkTable.from_records(works)
        marks.append(clocks())
        timed = model.time_program(instrs, works, config, table)
        marks.append(clocks())
        queues, pops, pushes, cycles, port = model.instruction_costs(instrs, works, config, table)
        marks.append(clocks())
        schedule = model.simulate(queues, pops, pushes, cycles, port, config.token_latency_cycles)
        marks.append(clocks())
        if schedule.end != timed.schedule.end:
            raise SystemExit("time_program and costs + simulate disagree")
        info = InstructionInfo(
            opcodes=[i.opcode_name for i in instrs], queues=queues,
            units=[i.spec.unit.value for i in instrs], nodes=[""] * n, layers=[None] * n,
            components=["other"] * n)
        report = build_report(info, timed.schedule, table, EnergyModel.from_config(config),
                              config)
        marks.append(clocks())
        for k, stage in enumerate(STAGES):
            cpu[stage] = min(cpu[stage], marks[k + 1][0] - marks[k][0])
            wall[stage] = min(wall[stage], marks[k + 1][1] - marks[k][1])

    def rate(seconds: dict, stages: tuple[str, ...]) -> float:
        return n / sum(seconds[s] for s in stages)

    return {
        "instructions": n,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "timing_per_second": rate(cpu, ("timing",)),
        "costs_per_second": rate(cpu, ("costs",)),
        "simulate_per_second": rate(cpu, ("simulate",)),
        "timing_with_work_table_per_second": rate(cpu, ("work_table", "timing")),
        "end_to_end_per_second": rate(cpu, ("work_table", "timing", "report")),
        "timing_per_wall_second": rate(wall, ("timing",)),
        "target_per_second": TARGET_PER_SECOND,
        "timing_vs_target": rate(cpu, ("timing",)) / TARGET_PER_SECOND,
        "simulated_cycles": report["total"]["cycles"],
        "on_chip_energy_pj": report["energy"]["on_chip"]["energy_pj"],
        "roofline_cycles": report["roofline_cycles"],
        "event_loop": getattr(getattr(events, "compiled_loop", None), "__file__", "Python"),
    }


def _best(results: list[dict]) -> dict:
    """Per rate the best run, per time the shortest (the runs differ only in machine load)."""
    best = dict(results[0])
    for key, value in results[0].items():
        if key.endswith("_per_second") or key == "timing_vs_target":
            best[key] = max(r[key] for r in results)
        elif key in ("cpu_seconds", "wall_seconds"):
            best[key] = {s: min(r[key][s] for r in results) for s in value}
    return best


def print_result(name: str, result: dict) -> None:
    rate = result["timing_per_second"]
    verdict = "meets" if rate >= TARGET_PER_SECOND else "below"
    print(f"{name}: {result['instructions']:,} instructions")
    print(f"  TIMING MODEL (time_program)  {rate:>12,.0f} instructions per CPU second: "
          f"{result['timing_vs_target']:.2f}x the {TARGET_PER_SECOND:,}/s target ({verdict}; "
          f"{result['timing_per_wall_second']:,.0f} per wall second)")
    costs_share = result["cpu_seconds"]["costs"] / (
        result["cpu_seconds"]["costs"] + result["cpu_seconds"]["simulate"])
    print(f"    of which costs alone       {result['costs_per_second']:>12,.0f} "
          f"({costs_share:.0%} of costs + simulate)")
    print(f"    of which simulate alone    {result['simulate_per_second']:>12,.0f} "
          f"(event loop: {result['event_loop']})")
    print(f"  + work columns               {result['timing_with_work_table_per_second']:>12,.0f}")
    print(f"  + energy/report              {result['end_to_end_per_second']:>12,.0f}")
    print(f"  simulated cycles {result['simulated_cycles']:,} "
          f"(roofline {result['roofline_cycles']:,}), on-chip energy "
          f"{result['on_chip_energy_pj']:,.0f} pJ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", default="synthetic,compiled-dense,compiled-spls",
                        help="comma-separated: synthetic, compiled-dense, compiled-spls")
    parser.add_argument("--baseline", metavar="COMMIT",
                        help="also time runtime/timing.py as at COMMIT, alternating")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    baseline = baseline_timing(args.baseline) if args.baseline else None
    results = {}
    for name in args.streams.split(","):
        if name == "synthetic":
            instrs, works = synthetic_program(args.instructions)
        elif name.startswith("compiled-"):
            instrs, works = compiled_program(args.instructions, name.removeprefix("compiled-"))
        else:
            parser.error(f"--streams: unknown stream '{name}'")
        if baseline is None:
            results[name] = measure(instrs, works, args.repeat)
        else:  # one repeat each in turn: before and after see the same load
            runs = [(measure(instrs, works, 1, baseline), measure(instrs, works, 1))
                    for _ in range(args.repeat)]
            results[name] = {"baseline": _best([b for b, _ in runs]),
                             "working tree": _best([a for _, a in runs])}
            print_result(f"{name} at {args.baseline}", results[name]["baseline"])
            print_result(f"{name} now", results[name]["working tree"])
            continue
        print_result(name, results[name])
    results["load_average"] = os.getloadavg()
    print(f"load average {results['load_average']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
