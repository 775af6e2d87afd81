"""Where a scheme's attention-level energy goes: the on-chip dynamic energy of the attention
(QK^T, PV, softmax) and of the scheme's whole prediction, by instruction and by energy
category, as bench/scheme_comparison.py's attention-level efficiency counts it
(scheme_comparison_core.attention_level_parts).

    python bench/attention_energy_breakdown.py [--length 512] [--layers 1]
        [--setting "spls:attention=topk,k-ratio=0.2"] [--setting sanger:threshold=0.02] ...
        [--json out.json]

BERT-base with random weights (bench/attention_tiling.py's legacy export, random ids, all
tokens attended), INT8 without calibration data, default hardware, one input. A setting is
scheme:option=value,... (`dense` alone for none). Printed per setting: attention-level TOPS/W
(2 x the attention's dense MACs over attention + prediction pJ), then the pJ of each part by
instruction and by category (mac, bpu, topk, sfu, sram_<buffer>).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_dense_models.py

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from attention_tiling import export_bert
from scheme_comparison_core import LAYER_COMPONENTS, attention_level_parts

from esact_cc import api
from esact_cc.runtime.energy import ON_CHIP_CATEGORIES

DEFAULT_SETTINGS = ("dense", "spls:attention=topk,first-reference=0,hlog-bits=6,k-ratio=0.2,"
                    "pam-scale=one,similarity=cosprob,threshold=0.95,window=4",
                    "sanger:threshold=0.002", "spatten:token-keep=0.4")
"""The settings esact-tune chose for BERT-base 512 in bench/results/scheme_comparison_bert512.json."""


def parse_setting(text: str) -> tuple[str, list[str]]:
    scheme, _, options = text.partition(":")
    return scheme, [o for o in options.split(",") if o]


def breakdown(run) -> dict:
    """pJ of the attention and the prediction, by instruction and by on-chip category."""
    costs, attention, prediction = attention_level_parts(run)
    opcodes = np.asarray(run.info.opcodes, dtype=object)
    parts = {}
    for name, chosen in (("attention", attention), ("prediction", prediction)):
        by_opcode: dict[str, float] = defaultdict(float)
        for opcode in sorted(set(opcodes[chosen])):
            by_opcode[opcode] = float(costs.dynamic_on_chip[chosen & (opcodes == opcode)].sum())
        by_category = {c: float(costs.dynamic_by_category[c][chosen].sum())
                       for c in ON_CHIP_CATEGORIES if costs.dynamic_by_category[c][chosen].any()}
        parts[name] = {"pj": float(costs.dynamic_on_chip[chosen].sum()),
                       "by_instruction": dict(by_opcode), "by_category": by_category}
    components = run.report["components"]
    dense_macs = sum(components[n]["macs_dense"] for n in LAYER_COMPONENTS["attention"]
                     if n in components)
    executed = sum(components[n]["macs_executed"] for n in LAYER_COMPONENTS["attention"]
                   if n in components)
    total_pj = parts["attention"]["pj"] + parts["prediction"]["pj"]
    return {"attention_macs_dense": dense_macs, "attention_macs_executed": executed,
            "attention_tops_per_watt": 2.0 * dense_macs / total_pj,
            "on_chip_uj": run.report["energy"]["on_chip"]["energy_pj"] * 1e-6, **parts}


def print_breakdown(setting: str, row: dict) -> None:
    total = row["attention"]["pj"] + row["prediction"]["pj"]
    print(f"{setting}: attention-level {row['attention_tops_per_watt']:.3f} TOPS/W; attention "
          f"MACs {row['attention_macs_executed']:,.0f} of {row['attention_macs_dense']:,.0f}; "
          f"attention {row['attention']['pj'] * 1e-6:.1f} uJ + prediction "
          f"{row['prediction']['pj'] * 1e-6:.1f} uJ (chip {row['on_chip_uj']:.1f} uJ)")
    for part in ("attention", "prediction"):
        for key in ("by_instruction", "by_category"):
            items = sorted(row[part][key].items(), key=lambda kv: -kv[1])
            text = ", ".join(f"{k} {v * 1e-6:.1f} ({v / total:.0%})" for k, v in items if v)
            print(f"  {part} {key.replace('_', ' ')} (uJ, share of attention level): {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--setting", action="append", help="scheme:option=value,... (repeat)")
    parser.add_argument("--json", help="write the breakdowns here")
    args = parser.parse_args(argv)
    result = {"length": args.length, "layers": args.layers, "settings": {},
              "command": "python bench/attention_energy_breakdown.py "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bert.onnx"
        inputs = export_bert(args.length, args.layers, path)
        for setting in args.setting or DEFAULT_SETTINGS:
            scheme, options = parse_setting(setting)
            extra = {} if scheme == "dense" else {"sparsity": scheme, "sparsity_option": options}
            run = api.compile(str(path), stage="esact", **extra).simulate(inputs)
            result["settings"][setting] = row = breakdown(run)
            print_breakdown(setting, row)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
