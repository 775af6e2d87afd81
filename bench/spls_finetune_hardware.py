"""Dense vs SPLS on the hardware model for the digits ViT at batch 1, 2, 4, ... (issue 14).

For each batch B the bundled digits ViT and the fine-tuned one (`--finetuned`, an
esact-finetune output of the same graph) are re-exported at batch B (bench/digits_vit_batch.py;
the bundled export fixes batch 1), compiled dense and with each `--case`'s SPLS options (INT8
ranges from digits_calib.npz, grouped B images a sample), and run on `--images` test images
from `--first` (held apart from the fine-tuning and the tuning: test[180:] under
bench/spls_finetune.py's split-test protocol) in batches of B. Per image: cycles, on-chip and
system energy, accuracy, busy cycles of the load, compute (MAC array) and predict (BPU) units,
reuse, and the computation removed as `esact-run --report` counts it (prediction at 0.1 MAC
per HLog product), each under every MAC-array dataflow (`mac_array.dataflow`, the recorded
run re-timed: runtime/retiming.py). Every SPLS case is compared with the bundled model's dense
program at the same B and dataflow; `compute_bound_from` names the smallest B whose dense run
is compute-bound: the MAC array the busiest unit over the run (`bound_by`).

    python bench/spls_finetune_hardware.py --finetuned FILE.onnx [--batches 1,2,4,8,16]
        [--first 180] [--images 160] [--case LABEL=MODEL:OPTION,...] -o OUT.json

MODEL is `bundled` or `finetuned`; OPTION is an insert-spls `[LAYER:]NAME=VALUE` (none: the
defaults). Needs torch (the batch export).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digits_vit_batch import export_batch
from spls_finetune import MODELS, log

TUNED = ("hlog-bits=6,window=8,threshold=0.995,first-reference=1,1:threshold=0.97,"
         "2:threshold=0.6")
"""esact-tune's setting for the bundled model under a 1-point budget on test[:180]
(bench/results/spls_finetune_digits_bundled.json, `tuned_calib`)."""
FINETUNED = "hlog-bits=6,window=8,threshold=0.8,first-reference=1"
"""The setting the fine-tuned model was trained at (bench/results/spls_finetune_digits_hardware
.json): 52.3% of the program removed at batch 1."""
CASES = ("bundled-defaults=bundled:", f"bundled-tuned=bundled:{TUNED}",
         f"bundled-0.8=bundled:{FINETUNED}", f"finetuned-0.8=finetuned:{FINETUNED}")
UNITS = ("load", "compute", "predict", "sfu", "store")


@dataclasses.dataclass
class Case:
    label: str
    model: str  # "bundled" or "finetuned"
    options: list[str]


def parse_case(text: str) -> Case:
    label, sep, rest = text.partition("=")
    model, sep2, options = rest.partition(":")
    if not (sep and sep2 and label and model in ("bundled", "finetuned")):
        raise SystemExit(f"error: --case {text!r}: expected LABEL=bundled|finetuned:OPTIONS")
    return Case(label, model, [o for o in options.split(",") if o])


def calibration(workdir: Path, batch: int) -> str:
    """digits_calib.npz's images grouped `batch` to a sample (the same images at every B)."""
    path = workdir / f"digits_calib_b{batch}.npz"
    if not path.exists():
        images = np.load(MODELS / "digits_calib.npz")["images"]
        usable = len(images) // batch * batch
        np.savez(path, images=images[:usable].reshape(-1, batch, *images.shape[1:]))
    return f"pixel_values={path}:images"


def exported(workdir: Path, source: Path, batch: int) -> Path:
    path = workdir / f"{source.stem}_b{batch}.onnx"
    if not path.exists():
        export_batch(source, batch, path)
    return path


def run_batches(program: Any, images: np.ndarray, labels: np.ndarray, batch: int,
                ) -> dict[str, dict[str, float]]:
    """Per-image means of one binary over `images` in batches, under every dataflow."""
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.isa_costs import MAC_DATAFLOWS
    from esact_cc.runtime.retiming import retime
    from esact_cc.runtime.run_program import run_program

    config = resolve_config(None)
    sums: dict[str, dict[str, float]] = {d: {} for d in MAC_DATAFLOWS}
    right = 0
    for start in range(0, len(images), batch):
        run = run_program(program, {"pixel_values": images[start:start + batch]}, config)
        right += int((np.argmax(run.outputs["logits"], -1) == labels[start:start + batch]).sum())
        for dataflow in MAC_DATAFLOWS:
            timed = run if dataflow == config.mac_dataflow else retime(
                run, dataclasses.replace(config, mac_dataflow=dataflow))
            for key, value in measures(timed.report).items():
                sums[dataflow][key] = sums[dataflow].get(key, 0.0) + value
    means = {d: {"accuracy": 100.0 * right / len(images),
                 **{k: v / len(images) for k, v in s.items()}} for d, s in sums.items()}
    return {d: m | {"bound_by": bound_by(m)} for d, m in means.items()}


def bound_by(measured: dict[str, float]) -> str:
    """The unit with the most busy cycles over a run (`UNITS`): "compute" (the MAC array) is
    what "compute-bound" means for the digits ViT against batch (docs/design.md 4.1)."""
    return max(UNITS, key=lambda unit: measured[f"{unit}_busy"])


def measures(report: dict[str, Any]) -> dict[str, float]:
    """What one run spent (summed over a batch; the caller divides by the images)."""
    total, spls = report["total"], report.get("spls")
    out = {"cycles": total["cycles"],
           "on_chip_uj": report["energy"]["on_chip"]["energy_pj"] * 1e-6,
           "system_uj": report["energy"]["system"]["energy_pj"] * 1e-6,
           "macs_dense": total["macs_dense"],
           "macs_spent": total["macs_dense"] if spls is None else (
               total["macs_dense"] - spls["macs_dense"] + spls["macs_executed"]
               + 0.1 * spls["hlog_products"]),
           "rows": 0 if spls is None else spls["rows"],
           "reused_rows": 0 if spls is None else spls["reused_rows"]}
    for unit in UNITS:
        out[f"{unit}_busy"] = report["units"][unit]["busy_cycles"]
    return out


def ratios(spls: dict[str, float], dense: dict[str, float]) -> dict[str, float]:
    return {k: spls[k] / dense[k] for k in ("cycles", "on_chip_uj", "system_uj")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--finetuned", type=Path, required=True, help="fine-tuned digits ViT")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--first", type=int, default=180, help="first test image")
    ap.add_argument("--case", action="append", default=None, metavar="LABEL=MODEL:OPTIONS")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/spls_finetune_hardware"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if not args.finetuned.is_file():
        raise SystemExit(f"error: no model file {args.finetuned}")
    if any(b < 1 or args.images % b for b in batches):
        raise SystemExit(f"error: --images {args.images} must be a multiple of every batch")
    cases = [parse_case(c) for c in (args.case or CASES)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    from esact_cc import api

    sources = {"bundled": MODELS / "digits_vit.onnx", "finetuned": args.finetuned}
    test = np.load(MODELS / "digits_test.npz")
    images = test["images"][args.first:args.first + args.images]
    labels = test["labels"][args.first:args.first + args.images]
    if len(images) != args.images:
        raise SystemExit(f"error: only {len(images)} test images from {args.first}")
    result: dict[str, Any] = {
        "finetuned_model": str(args.finetuned), "test_images": [args.first,
                                                                args.first + len(images)],
        "cases": [dataclasses.asdict(c) for c in cases],
        "batches": {}}
    for batch in batches:
        start = time.process_time()
        calib = calibration(args.workdir, batch)
        paths = {tag: exported(args.workdir, source, batch)
                 for tag, source in sources.items()}
        dense = run_batches(api.compile(str(paths["bundled"]), stage="esb",
                                        calibration_data=calib).program(),
                            images, labels, batch)
        entry: dict[str, Any] = {"dense_bundled": dense, "spls": {}}
        for case in cases:
            program = api.compile(str(paths[case.model]), stage="esb", calibration_data=calib,
                                  sparsity="spls", spls_option=case.options).program()
            measured = run_batches(program, images, labels, batch)
            entry["spls"][case.label] = {
                d: m | {"over_dense": ratios(m, dense[d]),
                        "computation_removed_vs_dense_program":
                            1.0 - m["macs_spent"] / dense[d]["macs_dense"],
                        "reused_row_fraction": m["reused_rows"] / m["rows"] if m["rows"]
                        else 0.0}
                for d, m in measured.items()}
        entry["cpu_seconds"] = time.process_time() - start
        result["batches"][str(batch)] = entry
        log(f"batch {batch}: " + json.dumps(summary_line(entry)))
    result["compute_bound_from"] = {
        d: next((int(b) for b, e in result["batches"].items()
                 if bound_by(e["dense_bundled"][d]) == "compute"),
                None) for d in next(iter(result["batches"].values()))["dense_bundled"]}
    result["command"] = "python bench/spls_finetune_hardware.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def summary_line(entry: dict[str, Any]) -> dict[str, Any]:
    """Cycles / on-chip energy over dense per case and dataflow, for the log."""
    return {label: {d: {k: round(v, 3) for k, v in m["over_dense"].items() if k != "system_uj"}
                    for d, m in by_flow.items()} for label, by_flow in entry["spls"].items()}


if __name__ == "__main__":
    sys.exit(main())
