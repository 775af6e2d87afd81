"""all-MiniLM-L6-v2 at 128 real tokens: where SPLS's DRAM traffic above dense comes from.

The run report's system energy is on-chip energy plus DRAM bytes x the config's pJ per byte
(runtime/energy.py); SPLS's chosen setting spends less on chip than dense but more in DRAM
(docs/design.md 6.3). This runs dense and the tuned setting (bench/spls_minilm128.py's result,
`--tuned`) on the first `--inputs` reporting inputs through the hardware model and sums each
instruction's DRAM read and write bytes by (layer, component, opcode) from the run's work table
(runtime/report.py's columns), then lists the differences SPLS - dense, largest first.

    HF_HUB_OFFLINE=1 python bench/spls_minilm128_dram.py \
        --tuned bench/results/spls_minilm128_s12/scheme_comparison_minilm.json \
        --inputs 2 --json bench/results/spls_minilm128_dram_s12.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))

import scheme_comparison_models as models
import spls_minilm128_layers as layers_bench

TOKENS = 128
CALIBRATION = layers_bench.CALIBRATION


def dram_by_key(run: Any) -> dict[str, float]:
    """DRAM bytes (read + write) per 'layer/component/opcode/ONNX node' of one run."""
    info, work = run.info, run.work
    total = np.asarray(work["dram_read_bytes"]) + np.asarray(work["dram_write_bytes"])
    out: dict[str, float] = defaultdict(float)
    for i in np.nonzero(total)[0]:
        layer = "none" if info.layers[i] is None else str(info.layers[i])
        node = (info.nodes[i] or "-").replace("/", "|")
        out[f"{layer}/{info.components[i]}/{info.opcodes[i]}/{node}"] += float(total[i])
    return dict(out)


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in runs for k in r})
    return {k: float(np.mean([r.get(k, 0.0) for r in runs])) for k in keys}


def rolled(table: dict[str, float], parts: tuple[int, ...]) -> dict[str, float]:
    """`table` summed over the key parts not in `parts` (0 layer, 1 component, 2 opcode,
    3 node)."""
    out: dict[str, float] = defaultdict(float)
    for key, value in table.items():
        fields = key.split("/")
        out["/".join(fields[p] for p in parts)] += value
    return dict(out)


def run_setting(onnx: Path, calib_npz: Path, config: Any, inputs: list, tmp: Path
                ) -> dict[str, Any]:
    from esact_cc import api

    scheme: dict[str, Any] = {}
    if config is not None:
        path = tmp / "spls.json"
        path.write_text(config.to_json())
        scheme = {"sparsity": "spls", "spls_config": str(path)}
    program = api.compile(str(onnx), stage="esact", calibration_data=str(calib_npz), **scheme)
    runs = [program.simulate(sample) for sample in inputs]
    return {"bytes": mean_of([dram_by_key(r) for r in runs]),
            "dram_pj_per_byte": float(runs[0].config.dram_pj_per_byte),
            "on_chip_uj": float(np.mean([r.report["energy"]["on_chip"]["energy_pj"]
                                         for r in runs])) * 1e-6,
            "system_uj": float(np.mean([r.report["energy"]["system"]["energy_pj"]
                                        for r in runs])) * 1e-6,
            "cycles": float(np.mean([r.report["total"]["cycles"] for r in runs]))}


def differences(dense: dict[str, float], spls: dict[str, float], pj: float,
                top: int) -> list[dict[str, Any]]:
    keys = set(dense) | set(spls)
    rows = [{"key": k, "dense_mb": dense.get(k, 0.0) / 1e6, "spls_mb": spls.get(k, 0.0) / 1e6,
             "delta_uj": (spls.get(k, 0.0) - dense.get(k, 0.0)) * pj * 1e-6} for k in keys]
    rows = [r for r in rows if abs(r["delta_uj"]) > 1e-9]
    rows.sort(key=lambda r: -abs(r["delta_uj"]))
    return rows[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", type=Path, required=True,
                        help="bench/spls_minilm128.py's result JSON")
    parser.add_argument("--inputs", type=int, default=2, help="reporting inputs run")
    parser.add_argument("--top", type=int, default=25, help="rows of each difference table")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.inputs < 1 or args.top < 1:
        parser.error("--inputs and --top must be >= 1")
    settings = layers_bench.settings_of(argparse.Namespace(tuned=args.tuned, setting=[]))
    samples, source, _ = models.minilm_samples("real", TOKENS)
    calibration = samples[:CALIBRATION]
    reporting = samples[CALIBRATION:CALIBRATION + args.inputs]
    result: dict[str, Any] = {
        "command": "HF_HUB_OFFLINE=1 python bench/spls_minilm128_dram.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "inputs": f"{source} [{CALIBRATION}:{CALIBRATION + args.inputs}]", "settings": {}}
    with tempfile.TemporaryDirectory(prefix="spls-minilm128-dram-") as tmp_name:
        tmp = Path(tmp_name)
        onnx, calib_npz = layers_bench.export_with_calibration(samples, calibration, tmp)
        for name, config in settings.items():
            result["settings"][name] = run_setting(onnx, calib_npz, config, reporting, tmp)
    dense, tuned = result["settings"]["dense"], result["settings"]["tuned"]
    pj = dense["dram_pj_per_byte"]
    result["dram_uj"] = {name: sum(s["bytes"].values()) * pj * 1e-6
                         for name, s in result["settings"].items()}
    result["differences"] = {
        by: differences(rolled(dense["bytes"], parts), rolled(tuned["bytes"], parts), pj,
                        args.top)
        for by, parts in {"layer/opcode/node": (0, 2, 3), "layer/component/opcode": (0, 1, 2),
                          "component/opcode": (1, 2),
                          "opcode": (2,), "layer": (0,)}.items()}
    for by, rows in result["differences"].items():
        print(f"DRAM SPLS - dense by {by} (uJ at {pj} pJ/B):")
        for r in rows[:12]:
            print(f"  {r['key']:60s} {r['dense_mb']:8.3f} -> {r['spls_mb']:8.3f} MB "
                  f"{r['delta_uj']:+8.2f} uJ")
    print(f"DRAM uJ: {result['dram_uj']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
