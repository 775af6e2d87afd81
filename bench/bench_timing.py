"""Timing-model throughput: simulated instructions per second of wall time.

Builds a synthetic BERT-shaped instruction stream of real ISA instructions with work
records (no functional execution: this measures the timing model only): per block a
double-buffered load of activations and weights, a GEMM (some masked), an SFU op, a store,
with the tokens a compiler would insert, and every 16th block an SPLS prediction group.
Measures three stages separately and in total:
  simulate      the event simulation over precomputed arrays (timing.simulate)
  costs         per-instruction cycles from the ISA cost table (timing.instruction_costs)
  report        work columns + energy + report (report.build_report)
Target (issue 4): >= 200,000 instructions/s for timing (costs + simulate).

Run:  python bench/bench_timing.py [--instructions 200000] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

TARGET_PER_SECOND = 200_000


def synthetic_program(n_instructions: int, seed: int = 0):
    from esact_cc.runtime.isa import Buffer, Instruction, Queue, Work

    rng = random.Random(seed)
    mask = lambda *qs: sum(1 << int(q) for q in qs)
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


def measure(n_instructions: int, repeat: int) -> dict:
    from esact_cc.runtime.energy import EnergyModel
    from esact_cc.runtime.hw_config import load_config
    from esact_cc.runtime.report import InstructionInfo, build_report
    from esact_cc.runtime.timing import instruction_costs, simulate
    from esact_cc.runtime.work_table import WorkTable

    config = load_config()
    instrs, works = synthetic_program(n_instructions)
    n = len(instrs)
    best = {"costs": float("inf"), "simulate": float("inf"), "report": float("inf")}
    schedule = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        queues, pops, pushes, cycles, port = instruction_costs(instrs, works, config)
        t1 = time.perf_counter()
        schedule = simulate(queues, pops, pushes, cycles, port, config.token_latency_cycles)
        t2 = time.perf_counter()
        info = InstructionInfo(
            opcodes=[i.opcode_name for i in instrs], queues=queues,
            units=[i.spec.unit.value for i in instrs], nodes=[""] * n, layers=[None] * n,
            components=["other"] * n)
        report = build_report(info, schedule, WorkTable.from_records(works),
                              EnergyModel.from_config(config), config)
        t3 = time.perf_counter()
        best["costs"] = min(best["costs"], t1 - t0)
        best["simulate"] = min(best["simulate"], t2 - t1)
        best["report"] = min(best["report"], t3 - t2)
    timing_seconds = best["costs"] + best["simulate"]
    return {
        "instructions": n,
        "seconds": best,
        "simulate_per_second": n / best["simulate"],
        "timing_per_second": n / timing_seconds,
        "end_to_end_per_second": n / (timing_seconds + best["report"]),
        "target_per_second": TARGET_PER_SECOND,
        "timing_vs_target": n / timing_seconds / TARGET_PER_SECOND,
        "simulated_cycles": report["total"]["cycles"],
        "roofline_cycles": report["roofline_cycles"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    result = measure(args.instructions, args.repeat)
    print(f"instructions            {result['instructions']:,}")
    print(f"simulate only           {result['simulate_per_second']:,.0f} instr/s")
    print(f"timing (costs+simulate) {result['timing_per_second']:,.0f} instr/s "
          f"({result['timing_vs_target']:.2f}x the {TARGET_PER_SECOND:,}/s target)")
    print(f"timing + energy/report  {result['end_to_end_per_second']:,.0f} instr/s")
    print(f"simulated cycles        {result['simulated_cycles']:,} "
          f"(roofline {result['roofline_cycles']:,})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
