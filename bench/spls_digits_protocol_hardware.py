"""The digits protocol's (bench/spls_digits_protocol.py) chosen settings as binaries on the
hardware model at batch 1, and its frontier plot.

Each chosen setting (esact-tune's, fold 0: chosen on test[:180]) is compiled by esact-cc
(`--spls-config`, INT8 ranges from digits_calib.npz) and run on the first `images` of test[180:]
(reported images), one at a time, with the bundled model's dense binary on the same images:
cycles and on-chip energy over dense, and the computation removed as `esact-run --report`
counts it (whole program, prediction at 0.1 MAC per HLog product), next to what the
protocol's reference-interpreter accounting says for the same images (they must agree).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spls_finetune import CALIB_BINDING, MODELS, log, totals
from spls_finetune_hardware import measures, ratios


def run_binary(program: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-image means of one binary at batch 1, and its accuracy."""
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program

    config = resolve_config(None)
    sums: dict[str, float] = {}
    right = 0
    for image, label in zip(images, labels):
        run = run_program(program, {"pixel_values": image[None]}, config)
        right += int(np.argmax(run.outputs["logits"]) == label)
        for key, value in measures(run.report).items():
            sums[key] = sums.get(key, 0.0) + value
    return {"accuracy": 100.0 * right / len(images),
            **{k: v / len(images) for k, v in sums.items()}}


def interpreter_accounting(model: Path, config: Any, images: np.ndarray,
                           labels: np.ndarray, macs: dict[str, int]) -> tuple[float, list[int]]:
    """The protocol's accounting (reference interpreter) of `config` on the same images: the
    removed share, and the layers SPLS takes (none: the choice is the dense program)."""
    from spls_digits_protocol import evaluator

    int8 = [{"pixel_values": img[None]}
            for img in np.load(MODELS / "digits_calib.npz")["images"]]
    spls = evaluator(model, images, labels, int8, "hardware")
    m = spls.measure([config])[0]
    removed = totals(m.work.as_dict() | {"inputs": len(images)}, **macs)["vs_dense_program"]
    return removed, spls.layer_indices(config)


def hardware(cases: dict[str, tuple[Path, str]], test: tuple, count: int, workdir: Path,
             macs: dict[str, int]) -> dict[str, Any]:
    """Each case's binary (a chosen SPLS config's JSON) and the bundled dense binary on the
    first `count` images fold 0 reports, at batch 1."""
    from esact_cc import api
    from esact_cc.sparsity.spls_options import SplsConfig

    first = len(test[1]) // 2  # fold 0 reports the second half (chosen on the first)
    images, labels = test[0][first:first + count], test[1][first:first + count]
    dense = run_binary(api.compile(str(MODELS / "digits_vit.onnx"), stage="esb",
                                   calibration_data=CALIB_BINDING).program(), images, labels)
    out: dict[str, Any] = {"images": [first, first + len(images)], "batch": 1,
                           "dense_bundled": dense, "spls": {}}
    for name, (model, text) in cases.items():
        path = workdir / f"chosen_{name.replace('/', '_').replace(' ', '_')}.json"
        path.write_text(text)
        config = SplsConfig.load(path)
        removed, layers = interpreter_accounting(model, config, images, labels, macs)
        entry: dict[str, Any] = {
            "config": {"options": config.options,
                       "layers": {str(k): v for k, v in config.layers.items()}},
            "spls_layers": layers, "removed_by_interpreter_accounting": removed}
        out["spls"][name] = entry
        if not layers:  # esact-cc refuses an SPLS compile that takes no layer
            entry["binary"] = "none: the choice predicts no layer, its program is the dense one"
            log(f"hardware {name}: the choice is the dense program")
            continue
        program = api.compile(str(model), stage="esb", calibration_data=CALIB_BINDING,
                              spls_config=str(path)).program()
        measured = run_binary(program, images, labels)
        entry.update({**measured, "over_dense": ratios(measured, dense),
                      "removed_vs_dense_program": 1.0 - measured["macs_spent"]
                      / dense["macs_dense"]})
        log(f"hardware {name}: {entry['over_dense']}, removed "
            f"{entry['removed_vs_dense_program']:.4f} (interpreter {removed:.4f})")
    return out


def plot(report: dict[str, Any], path: Path) -> bool:
    """Removed share vs loss over the test images: each model's dense program and uniform
    frontier, and esact-tune's pooled held-apart choices."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, model) in enumerate(report["models"].items()):
        points = sorted(model["frontier_all"].items(), key=lambda kv: -float(kv[0]))
        halves = model["partitions"][0]  # the model's own dense INT8 program: 0% removed
        dense_loss = (np.mean(halves["int8_dense_bundled_accuracy"])
                      - np.mean(halves["int8_dense_own_accuracy"]))
        ax.plot([0.0] + [100 * p["removed_vs_dense_program"] for _, p in points],
                [dense_loss] + [p["loss_points"] for _, p in points], "o-", color=f"C{i}",
                label=f"{name}: dense, then uniform threshold {points[0][0]}..{points[-1][0]}")
        for key, pooled in model["partitions"][0]["budgets"].items():
            chosen = pooled["esact_tune"]
            if chosen:
                ax.plot(100 * chosen["removed_vs_dense_program"],
                        chosen["loss_points_vs_bundled_dense_int8"], "*", color=f"C{i}",
                        markersize=13, markeredgecolor="k",
                        label=f"{name}: esact-tune, budget {key}, held apart")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="1 point")
    ax.axvline(52.0, color="grey", lw=0.8, ls=":", label="52% removed")
    ax.set_xlabel("computation removed vs the dead-row-eliminated dense program, "
                  "prediction counted (%)")
    ax.set_ylabel(f"top-1 loss vs bundled dense INT8 (points, "
                  f"{report['splits']['reported_over_both_folds']} test images)")
    ax.set_title("digits ViT: SPLS with and without fine-tuning (held-apart test images)")
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
