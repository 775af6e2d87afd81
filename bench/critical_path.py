"""The critical path of a compiled BERT-base program on the hardware model: which unit's work
the run waits on, from the first instruction to the last.

Walking back from the instruction that ends last, each instruction's start is explained by the
one that released it: the previous instruction of its in-order queue or the producer of the
last dependency token it popped (the one that ended last). Consecutive steps of the same
queue and opcode are merged into segments; the per-unit busy totals beside them say what ran
off the path. Used for issue 14's breakdown of the SPLS prediction against dense
(bench/results/spls_critical_path_h2.md).

    python bench/critical_path.py [--length 512] [--layers 1] [--settings dense spls-topk-no-reuse]
        [--min-cycles 5000] [--json out.json]
    python bench/critical_path.py --digits-batch 16 [--finetuned FILE.onnx] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_dense_models.py

import argparse
import json
import tempfile
from pathlib import Path


def critical_path(schedule) -> list[int]:
    """Instruction indices on the critical path, first to last."""
    queues, end = list(schedule.queues), schedule.end
    producers: dict[int, list[int]] = {}
    for p, c in zip(schedule.token_producers.tolist(), schedule.token_consumers.tolist()):
        producers.setdefault(c, []).append(p)
    previous, last = {}, {}
    for i, q in enumerate(queues):
        if q in last:
            previous[i] = last[q]
        last[q] = i
    i = max(range(len(queues)), key=lambda j: end[j])
    path = [i]
    while True:
        released = [(end[p], p) for p in producers.get(i, [])]
        if i in previous:
            released.append((end[previous[i]], previous[i]))
        if not released or max(released)[0] <= 0:
            break
        i = max(released)[1]
        path.append(i)
    return path[::-1]


def segments(schedule, opcodes: list[str], path: list[int]) -> list[dict[str, object]]:
    """Runs of the path with one queue and opcode: count, first start, last end."""
    runs: list[dict[str, object]] = []
    for i in path:
        queue = schedule.queue_names[schedule.queues[i]]
        if runs and (runs[-1]["queue"], runs[-1]["opcode"]) == (queue, opcodes[i]):
            runs[-1]["count"] += 1  # type: ignore[operator]
            runs[-1]["end"] = schedule.end[i]
        else:
            runs.append({"queue": queue, "opcode": opcodes[i], "count": 1,
                         "start": schedule.start[i], "end": schedule.end[i]})
    return runs


def measure(path: Path, inputs, setting: str, options: dict | None = None) -> dict[str, object]:
    from long_sequence import options as bert_options

    from esact_cc import api

    compiled = api.compile(str(path), stage="esact",
                           **(bert_options(setting) if options is None else options))
    program = compiled.program()
    result = compiled.simulate(inputs)
    schedule = result.schedule
    opcodes = [i.opcode_name for i in program.instructions]
    on_path = critical_path(schedule)
    return {"setting": setting, "cycles": schedule.total_cycles,
            "energy_on_chip_uj": round(result.report["energy"]["on_chip"]["energy_pj"] / 1e6, 1),
            "busy_by_queue": dict(schedule.busy_cycles),
            "critical_path": segments(schedule, opcodes, on_path),
            "path_by_unit_opcode": path_totals(schedule, opcodes, on_path),
            "dma_by_node": dma_by_node(schedule, program, opcodes)}


def path_totals(schedule, opcodes: list[str], path: list[int]) -> dict[str, int]:
    """Cycles of the path per `queue opcode`, largest first."""
    totals: dict[str, int] = {}
    for i in path:
        key = f"{schedule.queue_names[schedule.queues[i]]} {opcodes[i]}"
        totals[key] = totals.get(key, 0) + int(schedule.end[i] - schedule.start[i])
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def dma_by_node(schedule, program, opcodes: list[str]) -> dict[str, list[int]]:
    """`load|store buffer node rows x cols` -> [count, busy cycles], largest first: which
    LOADs and STOREs a program spends its DMA on."""
    runs: dict[str, list[int]] = {}
    for i, ins in enumerate(program.instructions):
        if opcodes[i] in ("load", "store"):
            entry, f = program.debug.get(i), ins.fields
            key = (f"{opcodes[i]} {f['buf']} {entry.node if entry else '?'} "
                   f"{f['rows']}x{f['cols']}")
            run = runs.setdefault(key, [0, 0])
            run[0] += 1
            run[1] += int(schedule.end[i] - schedule.start[i])
    return dict(sorted(runs.items(), key=lambda kv: -kv[1][1]))


DIGITS_SPLS = ["hlog-bits=6", "window=8", "threshold=0.8", "first-reference=1"]
"""The fine-tuned digits ViT's setting (bench/spls_finetune_hardware.py FINETUNED)."""


def digits_rows(batch: int, finetuned: Path | None, workdir: Path) -> list[dict[str, object]]:
    """Dense (bundled model) and SPLS at threshold 0.8 (the fine-tuned model, if given) on the
    digits ViT at `batch`, on test images 180.. (bench/spls_finetune_hardware.py's protocol)."""
    import numpy as np
    from spls_finetune_hardware import MODELS, calibration, exported

    calib = calibration(workdir, batch)
    images = np.load(MODELS / "digits_test.npz")["images"][180:180 + batch]
    cases = [("dense", MODELS / "digits_vit.onnx", {}),
             ("spls-0.8", finetuned or MODELS / "digits_vit.onnx",
              {"sparsity": "spls", "sparsity_option": DIGITS_SPLS})]
    return [measure(exported(workdir, source, batch), {"pixel_values": images}, label,
                    {"calibration_data": calib, **extra})
            for label, source, extra in cases]


def main() -> None:
    from attention_tiling import export_bert  # torch: the benchmark only, not its tests
    from long_sequence import SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=["dense", "spls-topk-no-reuse"],
                        choices=list(SETTINGS))
    parser.add_argument("--min-cycles", type=int, default=5000,
                        help="print segments at least this long (the JSON keeps all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--digits-batch", type=int, default=0,
                        help="the digits ViT at this batch instead of BERT: dense vs SPLS 0.8")
    parser.add_argument("--finetuned", type=Path, help="with --digits-batch: the fine-tuned "
                        "digits ViT for the SPLS case (default: the bundled one)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.digits_batch:
            rows = digits_rows(args.digits_batch, args.finetuned, Path(tmp))
        else:
            path = Path(tmp) / f"bert_{args.length}.onnx"
            inputs = export_bert(args.length, args.layers, path)
            rows = [measure(path, inputs, setting) for setting in args.settings]
    for row in rows:
        print(f"{row['setting']}: {row['cycles']:,} cycles, {row['energy_on_chip_uj']} uJ on chip")
        for key, cycles in list(row["path_by_unit_opcode"].items())[:8]:  # type: ignore[union-attr]
            print(f"  path {key:24s} {cycles:>10,}")
        for run in row["critical_path"]:  # type: ignore[union-attr]
            if run["end"] - run["start"] >= args.min_cycles:
                print(f"  {run['queue']:8s} {run['opcode']:12s} x{run['count']:<4d} "
                      f"{run['start']:>10,} -> {run['end']:>10,}")
    if args.json:
        command = (f"python bench/critical_path.py --length {args.length} --layers {args.layers}"
                   f" --settings {' '.join(args.settings)}")
        if args.digits_batch:
            command = (f"python bench/critical_path.py --digits-batch {args.digits_batch}"
                       + (f" --finetuned {args.finetuned}" if args.finetuned else ""))
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
