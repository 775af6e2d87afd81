"""Dense vs SPLS binaries of BERT-base in one table: cycles, energy, TOPS/W, per-component MACs.

Runs the real tokens of /work/models/bert_base_legacy17.inputs.npz only (padding is not
sparsity: the first L tokens, L = the number of attended tokens, through the dynamic-axes
export), on the hardware config given (default: bench/configs/esact_mbuf256k.toml, the
reference hardware with a 256 KiB mask buffer, since BERT's 12 x L x L SPA masks do not fit
the default 64 KiB). Each row is one compilation: `dense`, or `spls` plus insert-spls options.
The paper's end-to-end 3.29 TOPS/W is printed beside the TOPS/W column for reference.

`predict cyc` is the busy time of the prediction (instructions of component `predict`, BPU /
TOPK / SIMILARITY and their SFU DEQUANT / SOFTMAX, as a union of intervals); `hidden` is the
part of it during which the MAC array (compute queue) is busy too, i.e. prediction overlapped
with generation. `--chunk-rows N` sets the sparse lowering's progressive-prediction chunk
(lower-to-esact's `spls-chunk-rows` option; default: the MAC array's rows; 0 = the prediction
of all rows as one unit).

    python bench/spls_bert_table.py [--hw CONFIG] [--row "spls attention=topk" ...]
                                    [--chunk-rows N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MODELS = Path("/work/models")
PAPER_TOPS_PER_W = 3.29
COMPONENTS = ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2")
DEFAULT_ROWS = ("dense", "spls", "spls attention=topk", "spls pam-scale=attention")


def run_row(row: str, hw: str, inputs: dict[str, np.ndarray], chunk_rows: int | None) -> dict:
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    from esact_cc import api

    scheme, *options = row.split()
    extra = ({} if scheme == "dense" else
             {"sparsity": "spls", "spls_option": options, "spls_chunk_rows": chunk_rows})
    compiled = api.compile(MODELS / "bert_base_legacy17_dynamic.onnx", stage="esact",
                           input_shapes={k: v.shape for k, v in inputs.items()}, hw=hw, **extra)
    result = run_program(compiled.program(), inputs, resolve_config(hw))
    report = result.report
    total = report["total"]
    spls = report.get("spls", {})
    predict_busy, hidden = prediction_overlap(result)
    return {
        "row": row,
        "cycles": total["cycles"],
        # energy at both boundaries (runtime/energy.py boundary_energies): the die, and the
        # die plus DRAM at the config's dram.technology
        "energy_on_chip_mj": report["energy"]["on_chip"]["energy_pj"] * 1e-9,
        "energy_system_mj": report["energy"]["system"]["energy_pj"] * 1e-9,
        "tops_per_watt_on_chip": report["energy"]["on_chip"]["tops_per_watt"],
        "tops_per_watt_system": report["energy"]["system"]["tops_per_watt"],
        "dram_technology": report["energy"]["dram_technology"],
        "macs_executed": {c: report["components"][c]["macs_executed"] for c in COMPONENTS},
        "macs_dense": {c: report["components"][c]["macs_dense"] for c in COMPONENTS},
        "reused_row_fraction": spls.get("reused_row_fraction", 0.0),
        "computation_reduction": spls.get("computation_reduction", 0.0),
        "predict_busy_cycles": spls.get("predict", {}).get("busy_cycles", 0),
        "predict_span_cycles": predict_busy,
        "predict_hidden_cycles": hidden,
        "predict_energy_on_chip_mj": spls.get("predict", {}).get("energy_on_chip_pj", 0.0) * 1e-9,
        "outputs": {k: v.tolist() for k, v in result.outputs.items() if v.size <= 768},
    }


def _union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def prediction_overlap(result) -> tuple[int, int]:
    """(cycles some prediction instruction runs, of those the cycles the compute queue is
    busy too), from the run's schedule."""
    from esact_cc.runtime.isa import Queue

    s, info = result.schedule, result.info
    predict = _union([(s.start[i], s.end[i]) for i in range(len(info))
                      if info.components[i] == "predict"])
    compute = _union([(s.start[i], s.end[i]) for i in range(len(info))
                      if info.queues[i] == int(Queue.COMPUTE)])
    hidden, j = 0, 0
    for a, b in predict:
        while j < len(compute) and compute[j][1] <= a:
            j += 1
        k = j
        while k < len(compute) and compute[k][0] < b:
            hidden += min(b, compute[k][1]) - max(a, compute[k][0])
            k += 1
    return sum(b - a for a, b in predict), hidden


def format_table(rows: list[dict]) -> str:
    head = (f"{'':28}{'cycles':>12}{'mJ chip':>9}{'mJ sys':>9}{'TOPS/W':>8}{'TOPS/W':>8}"
            f"{'(paper':>8}{'reused':>8}{'reduct.':>9}{'predict cyc':>13}{'hidden':>11}  "
            + "  ".join(f"{c:>7}" for c in COMPONENTS))
    lines = [head, f"{'':28}{'':>12}{'':>9}{'':>9}{'chip':>8}{'sys':>8}{'3.29)':>8}{'rows':>8}"
             f"{'':>9}{'':>13}{'':>11}  " + "  ".join(f"{'GMAC':>7}" for _ in COMPONENTS)]
    for r in rows:
        macs = "  ".join(f"{r['macs_executed'][c] / 1e9:7.3f}" for c in COMPONENTS)
        lines.append(f"{r['row']:28}{r['cycles']:>12,}{r['energy_on_chip_mj']:>9.2f}"
                     f"{r['energy_system_mj']:>9.2f}{r['tops_per_watt_on_chip']:>8.3f}"
                     f"{r['tops_per_watt_system']:>8.3f}{'':>8}"
                     f"{r['reused_row_fraction'] * 100:>7.1f}%"
                     f"{r['computation_reduction'] * 100:>8.1f}%{r['predict_span_cycles']:>13,}"
                     f"{r['predict_hidden_cycles']:>11,}  " + macs)
    dense = rows[0]["macs_dense"]
    lines.append(f"{'dense MACs':28}{'':>12}{'':>9}{'':>9}{'':>8}{'':>8}{'':>8}{'':>8}{'':>9}"
                 f"{'':>13}{'':>11}  " + "  ".join(f"{dense[c] / 1e9:7.3f}" for c in COMPONENTS))
    lines.append(f"(DRAM energy: {rows[0]['dram_technology']} preset; chip = on-chip boundary, "
                 "sys = plus DRAM)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw", default=str(Path(__file__).parent / "configs" / "esact_mbuf256k.toml"))
    parser.add_argument("--row", action="append", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="progressive-prediction chunk rows (0 = one chunk of all rows)")
    args = parser.parse_args(argv)
    raw = dict(np.load(MODELS / "bert_base_legacy17.inputs.npz"))
    real = int(raw["attention_mask"].sum())
    assert raw["attention_mask"][0, :real].all(), "right padding expected"
    inputs = {k: v[:, :real] for k, v in raw.items()}
    rows = [run_row(row, args.hw, inputs, args.chunk_rows) for row in (args.row or DEFAULT_ROWS)]
    chunk = "MAC rows" if args.chunk_rows is None else args.chunk_rows or "all rows"
    print(f"BERT-base, {real} real tokens, config {args.hw}, prediction chunk {chunk}")
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
