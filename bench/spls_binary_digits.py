"""Dense vs SPLS binaries of the bundled digits ViT on its held-out test set.

Compiles the bundled model twice (INT8 calibrated on its calibration split): dense, and
`--sparsity spls` with the given options (default: the insert-spls defaults). Runs
every test image on the hardware model (functional + timing + energy) and reports:
accuracy of onnxruntime (fp32), the dense binary and the SPLS binary; how many SPLS outputs
equal the INT8 SPLS reference interpreter's bit for bit (its host regions run by onnxruntime like
the binary's, unless --reference-host-numpy); the computation reduction (MAC array
plus the prediction at 0.1 MAC per HLog product, and per shift-add); mean cycles and energy;
the mean prediction busy cycles and how many of them the MAC array is busy too (hidden
prediction, as in bench/spls_bert_table.py). `--chunk-rows N` sets the sparse lowering's
progressive-prediction chunk (0 = all rows as one unit; the 17-token ViT is one chunk of the
default 32 rows either way).

    python bench/spls_binary_digits.py [--samples N] [--spls-option NAME=VALUE ...]
                                       [--chunk-rows N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from esact_cc.passes.insert_spls import DEFAULT_OPTIONS


def use_onnxruntime_for_host_regions() -> None:
    """Make the reference interpreter run `transformer.host` regions with onnxruntime, as the
    binary does (HOST instruction), instead of its numpy ONNX semantics: the two differ by
    float ulps (e.g. the patch-embedding Conv), which an INT8 / HLog rounding downstream can
    turn into a visible difference on a few inputs, dense or sparse alike."""
    from esact_cc.dialects import transformer
    from esact_cc.runtime.host_segments import host_session

    from esact_cc.frontend.onnx_export import export_ops, module_opset
    from esact_cc.interpreter.reference_interpreter import load_implementations, register

    load_implementations()
    sessions: dict[int, object] = {}

    @register("transformer.host")
    def _host(interp, op, args):  # type: ignore[no-untyped-def]
        assert isinstance(op, transformer.HostOp)
        block = op.body.block
        if id(op) not in sessions:
            body = [o for o in block.ops if o is not block.last_op]
            names = [f"in{i}" for i in range(len(block.args))]
            model = export_ops(body, list(block.args), list(block.last_op.operands), interp.store,
                               opset=module_opset(op.get_toplevel_object()), input_names=names,
                               output_names=[f"out{i}" for i in range(len(block.last_op.operands))],
                               graph_name="host")
            sessions[id(op)] = host_session(model.SerializeToString(deterministic=True))
        session = sessions[id(op)]
        return session.run(None, {f"in{i}": a for i, a in enumerate(args)})  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--spls-option", action="append", default=[])
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the bit-exactness check against the reference interpreter")
    parser.add_argument("--reference-host-numpy", action="store_true",
                        help="reference interpreter runs host regions with its numpy semantics "
                        "(default: onnxruntime, like the binary)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="progressive-prediction chunk rows (0 = one chunk of all rows)")
    args = parser.parse_args(argv)
    from spls_bert_table import prediction_overlap  # bench/ is the script's directory
    if not args.reference_host_numpy:
        use_onnxruntime_for_host_regions()

    import onnxruntime as ort
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    from esact_cc import api
    from esact_cc.bundled_model import load_bundled_model

    model = load_bundled_model()
    count = len(model.test_images) if args.samples is None else args.samples
    images, labels = model.test_images[:count], model.test_labels[:count]
    config = resolve_config(None)
    with tempfile.TemporaryDirectory() as tmp:
        calibration = str(Path(tmp) / "calibration.npz")
        np.savez(calibration, **{model.input_name: model.calibration_images})
        common = {"calibration_data": calibration}
        sparse = {"sparsity": "spls", "spls_option": list(args.spls_option),
                  "spls_chunk_rows": args.chunk_rows}
        dense_program = api.compile(model.onnx_path, stage="esact", **common).program()
        spls_program = api.compile(model.onnx_path, stage="esact", **common, **sparse).program()
        reference = None if args.no_reference else api.compile(  # chunking is the esact stage's
            model.onnx_path, stage="sparsity", **common, sparsity="spls",
            spls_option=list(args.spls_option))

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    rows = {"onnxruntime": [], "dense": [], "spls": []}
    totals = {name: {"cycles": 0, "on_chip_pj": 0.0, "system_pj": 0.0} for name in ("dense", "spls")}
    work = {"macs_dense": 0, "macs_executed": 0, "hlog_products": 0, "shift_adds": 0,
            "rows": 0, "reused_rows": 0}
    skipped = dict.fromkeys(("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2"), 0)
    predict_cycles, predict_energy, exact = 0, 0.0, 0
    predict_span, predict_hidden = 0, 0
    for image in images:
        x = {model.input_name: image[None]}
        rows["onnxruntime"].append(session.run(None, x)[0][0])
        for name, program in (("dense", dense_program), ("spls", spls_program)):
            result = run_program(program, x, config)
            logits = next(iter(result.outputs.values()))[0]
            rows[name].append(logits)
            totals[name]["cycles"] += result.report["total"]["cycles"]
            for boundary in ("on_chip", "system"):
                totals[name][f"{boundary}_pj"] += result.report["energy"][boundary]["energy_pj"]
            if name == "spls":
                section = result.report["spls"]
                for key in work:
                    work[key] += section[key] if key in section else section["predict"][key]
                for key in skipped:
                    skipped[key] += section["skipped_macs"][key]
                predict_cycles += section["predict"]["busy_cycles"]
                span, hidden = prediction_overlap(result)
                predict_span += span
                predict_hidden += hidden
                predict_energy += section["predict"]["energy_on_chip_pj"]
                if reference is not None:
                    ref = next(iter(reference.run(x).values()))[0]
                    exact += int(np.array_equal(ref, logits))

    accuracy = {name: float(np.mean(np.argmax(np.stack(v), 1) == labels)) for name, v in rows.items()}
    dense_macs = work["macs_dense"]
    summary = {
        "images": count,
        "spls_options": args.spls_option or [f"defaults {asdict(DEFAULT_OPTIONS)}"],
        "accuracy": accuracy,
        "spls_minus_dense_points": 100 * (accuracy["spls"] - accuracy["dense"]),
        "spls_equals_reference": None if reference is None else exact,
        "reference_host_regions": "numpy" if args.reference_host_numpy else "onnxruntime",
        "reused_row_fraction": work["reused_rows"] / work["rows"],
        "mac_reduction": 1 - work["macs_executed"] / dense_macs,
        "computation_reduction": 1 - (work["macs_executed"] + 0.1 * work["hlog_products"]) / dense_macs,
        "computation_reduction_shift_adds": 1 - (work["macs_executed"] + 0.1 * work["shift_adds"]) / dense_macs,
        "skipped_macs_share": {k: v / dense_macs for k, v in skipped.items()},
        "mean_cycles": {k: v["cycles"] / count for k, v in totals.items()},
        "dram_technology": config.dram_technology,
        "mean_energy_on_chip_uj": {k: v["on_chip_pj"] / count * 1e-6 for k, v in totals.items()},
        "mean_energy_system_uj": {k: v["system_pj"] / count * 1e-6 for k, v in totals.items()},
        "mean_predict_busy_cycles": predict_cycles / count,
        "mean_predict_span_cycles": predict_span / count,
        "mean_predict_hidden_cycles": predict_hidden / count,
        "mean_predict_energy_on_chip_uj": predict_energy / count * 1e-6,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
