"""Dense vs SPLS binaries under each MAC-array dataflow (`mac_array.dataflow`): simulated cycles
and energy at both boundaries (on chip; system = on chip + DRAM), so a reduction is stated in
what the hardware model spends, not only in MACs.

Each program is compiled and run once on the hardware config given; the recorded run is then
re-timed under every dataflow (runtime/retiming.py: the dataflow changes timing and energy,
never the program or its outputs). Models:
- digits: the bundled 4-layer ViT, one test image (INT8 calibrated on its calibration images);
- bert: BERT-base (hidden 768, 12 heads, random weights, transformers + torch), `--layers`
  encoder layers at `--length` tokens, all real (no padding).

    python bench/spls_dataflow.py [--model digits bert] [--length 128] [--layers 2]
                                  [--hw bench/configs/esact_mbuf256k.toml]
                                  [--spls-option threshold=0.9 ...] [--chunk-rows N]
                                  [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from esact_cc import api
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.isa_costs import MAC_DATAFLOWS
from esact_cc.runtime.retiming import retime
from esact_cc.runtime.run_program import run_program

REPO = Path(__file__).resolve().parent.parent
DEFAULT_HW = REPO / "bench" / "configs" / "esact_mbuf256k.toml"  # BERT's SPA masks need 256 KiB


def digits_case(workdir: Path) -> tuple[str, dict, dict]:
    from esact_cc.bundled_model import load_bundled_model
    model = load_bundled_model()
    calibration = workdir / "calibration.npz"
    np.savez(calibration, **{model.input_name: model.calibration_images})
    inputs = {model.input_name: model.test_images[:1]}
    return str(model.onnx_path), inputs, {"calibration_data": str(calibration)}


def bert_case(workdir: Path, length: int, layers: int) -> tuple[str, dict, dict]:
    from attention_tiling import export_bert  # bench/ is the script's directory
    path = workdir / f"bert_{length}_{layers}.onnx"
    return str(path), export_bert(length, layers, path), {}


def measure(onnx: str, inputs: dict, common: dict, hw: str,
            spls_options: list[str], chunk_rows: int | None) -> list[dict]:
    config = resolve_config(hw)
    rows = []
    for scheme in ("dense", "spls"):
        extra = {} if scheme == "dense" else {"sparsity": "spls", "spls_option": spls_options,
                                           "spls_chunk_rows": chunk_rows}
        program = api.compile(onnx, stage="esact", hw=hw, **common, **extra).program()
        result = run_program(program, inputs, config)
        for dataflow in MAC_DATAFLOWS:
            timed = retime(result, dataclasses.replace(config, mac_dataflow=dataflow))
            report = timed.report
            rows.append({
                "scheme": scheme, "dataflow": dataflow,
                "cycles": report["total"]["cycles"],
                "macs_dense": report["total"]["macs_dense"],
                "macs_executed": report["total"]["macs_executed"],
                "reused_rows": report.get("spls", {}).get("reused_rows", 0),
                "rows": report.get("spls", {}).get("rows", 0),
                "on_chip_uj": report["energy"]["on_chip"]["energy_pj"] * 1e-6,
                "system_uj": report["energy"]["system"]["energy_pj"] * 1e-6,
            })
    dense = {r["dataflow"]: r for r in rows if r["scheme"] == "dense"}
    for r in rows:
        base = dense[r["dataflow"]]
        r["cycles_vs_dense"] = r["cycles"] / base["cycles"]
        r["on_chip_vs_dense"] = r["on_chip_uj"] / base["on_chip_uj"]
        r["system_vs_dense"] = r["system_uj"] / base["system_uj"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=("digits", "bert"), default=["digits"])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hw", default=str(DEFAULT_HW))
    parser.add_argument("--spls-option", action="append", default=[],
                        help="insert-spls option for the SPLS program, e.g. threshold=0.9")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="progressive-prediction chunk rows (default: the MAC array's "
                        "rows; 0 = one chunk of all rows, so a GEMM spans every kept row)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            case = (digits_case(Path(tmp)) if name == "digits"
                    else bert_case(Path(tmp), args.length, args.layers))
            out[name] = measure(*case, args.hw, args.spls_option, args.chunk_rows)
            for r in out[name]:
                print(f"{name:6} {r['scheme']:5} {r['dataflow']:17} cycles {r['cycles']:>9} "
                      f"({r['cycles_vs_dense']:.3f}x)  on-chip {r['on_chip_uj']:9.2f} uJ "
                      f"({r['on_chip_vs_dense']:.3f}x)  system {r['system_uj']:9.2f} uJ "
                      f"({r['system_vs_dense']:.3f}x)  MACs {r['macs_executed']}  "
                      f"reused rows {r['reused_rows']}/{r['rows']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
