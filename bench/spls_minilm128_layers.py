"""all-MiniLM-L6-v2 at 128 tokens, layer by layer: where SPLS pays on the hardware model and
where it does not.

Runs dense and each SPLS setting on every reporting input (bench/scheme_comparison_models
.minilm_samples: `--text real`, the default, pydoc topic prose of 128 real tokens, topics 8..23;
`--text sentences`, doc sentences 8..23 zero-padded to 128 tokens; INT8 ranges from inputs
0..7, the calibration ones, never reported) through the hardware model (functional + timing + energy,
default config), and gives per setting: mean cycles, on-chip and system energy, mean cosine of
the sentence embedding to the FP32 model (onnxruntime); per layer: the layer's cycles and
on-chip energy, its prediction's cycles and on-chip energy (component `predict`), the rows the
hardware reused (of 128) and the real (unpadded) rows among them (esact-tune's accounting on
the same sentences). Settings: `--tuned FILE` (bench/spls_minilm128.py's result: the
setting esact-tune chose) and `--setting NAME=OPT[,OPT...]` (`--sparsity-option` values,
per layer as `L:name=value`).

    HF_HUB_OFFLINE=1 python bench/spls_minilm128_layers.py \
        --tuned bench/results/spls_minilm128/scheme_comparison_minilm.json \
        [--text real|sentences] [--setting NAME=OPT,...] [--sentences 16] --json OUT.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))

import scheme_comparison_models as models

TOKENS = 128
CALIBRATION = 8
OUTPUT = "sentence_embedding"
MAC_COMPONENTS = ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2")
"""Per layer, each one's on-chip energy too: what reuse could save at most."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """name -> SplsConfig (None: dense)."""
    from esact_cc.sparsity.selection import select_scheme
    from esact_cc.sparsity.spls_options import SplsConfig

    settings: dict[str, Any] = {"dense": None}
    if args.tuned:
        chosen = json.loads(args.tuned.read_text())["schemes"]["spls"]["calibration"]
        settings["tuned"] = SplsConfig(dict(chosen["options"]), {
            int(i): dict(o) for i, o in chosen["layers"].items()})
    for spec in args.setting:
        name, _, options = spec.partition("=")
        _, config = select_scheme({"sparsity": "spls",
                                   "sparsity_option": [o for o in options.split(",") if o]})
        settings[name] = SplsConfig(dict(config.options), dict(config.layers))
    return settings


def layer_figures(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per layer: cycles and on-chip uJ of the layer, of its prediction, rows reused, and the
    on-chip uJ of each MAC component (`<component>_uj`)."""
    predict = report["components"].get("predict", {}).get("layers", {})
    spls = report.get("spls", {}).get("layers", {})
    out = {}
    for layer, figures in report["layers"].items():
        if layer == "none":
            continue
        out[layer] = {"cycles": figures["cycles"],
                      "on_chip_uj": figures["energy_on_chip_pj"] * 1e-6,
                      "predict_cycles": predict.get(layer, {}).get("cycles", 0),
                      "predict_uj": predict.get(layer, {}).get("energy_on_chip_pj", 0.0) * 1e-6,
                      "reused_rows": spls.get(layer, {}).get("reused_rows", 0),
                      **{f"{c}_uj": report["components"][c]["layers"][layer]
                         ["energy_on_chip_pj"] * 1e-6 for c in MAC_COMPONENTS
                         if layer in report["components"].get(c, {}).get("layers", {})}}
    return out


def real_rows_reused(onnx: Path, config: Any, calibration: list, reporting: list
                     ) -> list[float] | None:
    """esact-tune's accounting on the reporting sentences: real rows reused per layer (mean
    per sentence), None for dense."""
    from esact_cc.tuning.spls_calibration_inputs import CalibrationData
    from esact_cc.tuning.spls_measurement import SplsEvaluator

    if config is None:
        return None
    evaluator = SplsEvaluator(onnx, CalibrationData(reporting, None, "reporting"), OUTPUT,
                              quantize_samples=calibration)
    work = evaluator.measure([config])[0].work
    return [w.reused_rows / len(reporting) for w in work.layers]


def measure(onnx: Path, calib_npz: Path, config: Any, reporting: list, fp32: list,
            tmp: Path) -> dict[str, Any]:
    from esact_cc import api

    scheme: dict[str, Any] = {}
    if config is not None:
        path = tmp / "spls.json"
        path.write_text(config.to_json())
        scheme = {"sparsity": "spls", "spls_config": str(path)}
    from esact_cc.runtime.errors import EsactError

    try:
        program = api.compile(str(onnx), stage="esact", calibration_data=str(calib_npz),
                              **scheme)
    except EsactError as error:  # e.g. the prediction off in every layer: the dense program
        return {"error": str(error)}
    runs = [program.simulate(sample) for sample in reporting]
    per_sentence = [{"cycles": r.report["total"]["cycles"],
                     "on_chip_uj": r.report["energy"]["on_chip"]["energy_pj"] * 1e-6,
                     "system_uj": r.report["energy"]["system"]["energy_pj"] * 1e-6,
                     "cosine": cosine(r.outputs[OUTPUT], ref)} for r, ref in zip(runs, fp32)]
    layers = [layer_figures(r.report) for r in runs]
    mean_layers = {layer: {key: float(np.mean([ls[layer][key] for ls in layers]))
                           for key in layers[0][layer]} for layer in layers[0]}
    return {"mean": {key: float(np.mean([s[key] for s in per_sentence]))
                     for key in per_sentence[0]},
            "min_cosine": float(min(s["cosine"] for s in per_sentence)),
            "per_layer": mean_layers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", type=Path, help="bench/spls_minilm128.py's result JSON")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=OPT,...")
    parser.add_argument("--sentences", type=int, default=16, help="reporting inputs")
    parser.add_argument("--text", choices=models.MINILM_TEXTS, default="real",
                        help="real: 128 real tokens of pydoc prose; sentences: padded")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    settings = settings_of(args)
    samples, source, _ = models.minilm_samples(args.text, TOKENS)
    calibration = samples[:CALIBRATION]
    reporting = samples[CALIBRATION:CALIBRATION + args.sentences]
    result: dict[str, Any] = {
        "command": "HF_HUB_OFFLINE=1 python bench/spls_minilm128_layers.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "calibration_sentences": f"{source} [0:{CALIBRATION}] (INT8 ranges)",
        "reporting_sentences": f"{source} [{CALIBRATION}:{CALIBRATION + args.sentences}]",
        "real_tokens": [int(s["attention_mask"].sum()) for s in reporting],
        "settings": {}}
    with tempfile.TemporaryDirectory(prefix="spls-minilm128-") as tmp_name:
        tmp = Path(tmp_name)
        onnx, calib_npz = export_with_calibration(samples, calibration, tmp)
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        fp32 = [session.run([OUTPUT], dict(s))[0] for s in reporting]
        for name, config in settings.items():
            row = measure(onnx, calib_npz, config, reporting, fp32, tmp)
            if "error" in row:
                print(f"{name}: {row['error']}", flush=True)
            elif config is not None:
                row["options"], row["layers"] = config.options, {
                    str(i): o for i, o in sorted(config.layers.items())}
                real = real_rows_reused(onnx, config, calibration, reporting)
                for layer, reused in zip(sorted(row["per_layer"], key=int), real or []):
                    row["per_layer"][layer]["real_rows_reused"] = reused
            result["settings"][name] = row
            if "error" not in row:
                print(summary_line(name, row, result["settings"]["dense"]), flush=True)
    print(layer_table(result["settings"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def export_with_calibration(samples: list, calibration: list, tmp: Path) -> tuple[Path, Path]:
    """The trained MiniLM exported at the samples' shape (opset 14) and its calibration inputs
    as one .npz (samples on axis 0), in `tmp`."""
    from generate_models import SentenceEmbedding, minilm_trained

    onnx, calib_npz = tmp / "minilm128.onnx", tmp / "calib.npz"
    models._export(SentenceEmbedding(minilm_trained()), samples[0],
                   ["last_hidden_state", OUTPUT], onnx, 14)
    np.savez(calib_npz, **{k: np.concatenate([s[k] for s in calibration]) for k in samples[0]})
    return onnx, calib_npz


def summary_line(name: str, row: dict[str, Any], dense: dict[str, Any]) -> str:
    m, d = row["mean"], dense["mean"]
    return (f"{name}: cycles {m['cycles']:.0f} ({m['cycles'] / d['cycles']:.4f}x dense), "
            f"on-chip {m['on_chip_uj']:.1f} uJ ({m['on_chip_uj'] / d['on_chip_uj']:.4f}x), "
            f"system {m['system_uj']:.1f} uJ ({m['system_uj'] / d['system_uj']:.4f}x), "
            f"cosine to FP32 mean {m['cosine']:.4f} min {row['min_cosine']:.4f}")


def layer_table(settings: dict[str, Any]) -> str:
    dense = settings["dense"]["per_layer"]
    lines = [("| setting | layer | cycles vs dense | on-chip uJ vs dense | prediction cycles | "
             "prediction uJ | rows reused (hw, of 128) | real rows reused |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, row in settings.items():
        if name == "dense" or "error" in row:
            continue
        for layer, f in sorted(row["per_layer"].items(), key=lambda t: int(t[0])):
            lines.append(f"| {name} | {layer} | {f['cycles'] - dense[layer]['cycles']:+.0f} | "
                         f"{f['on_chip_uj'] - dense[layer]['on_chip_uj']:+.1f} | "
                         f"{f['predict_cycles']:.0f} | {f['predict_uj']:.1f} | "
                         f"{f['reused_rows']:.1f} | {f.get('real_rows_reused', 0.0):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
