"""A linear with per-group input scales (outlier channels in its input, found by calibration)
in a model an attention-sparsity scheme takes: its input keeps the grouped INT8 format planned
for it (the first masked op's re-planning used to give it a per-tensor copy, and the compile
failed with "its input was only written in another INT8 format" on all-MiniLM-L6-v2 with
calibration data), and the binary equals the INT8 reference interpreter bit for bit."""

from __future__ import annotations

import encoder_graphs
from pathlib import Path

import numpy as np
import onnx
import pytest
from esact_cc.dialects.transformer import LinearOp
from onnx import numpy_helper

from esact_cc import api

SEQ, HIDDEN, HEADS, FFN = 32, 64, 4, 256


def _outlier_encoder(path: Path) -> Path:
    """One encoder layer whose FFN input channels 0-7 run 40x larger than the rest."""
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=FFN, seed=3)
    for init in model.graph.initializer:
        if init.name.endswith("intermediate/dense.weight"):
            w = numpy_helper.to_array(init).copy()
            w[:, :8] *= 40.0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("scheme", ["sanger", "spls"])
def test_group_scaled_linear_beside_a_scheme(tmp_path: Path, scheme: str) -> None:
    model = _outlier_encoder(tmp_path / "outliers.onnx")
    samples = [encoder_graphs.encoder_inputs(seq=SEQ, padding=3, seed=s) for s in range(4)]
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    common = {"sparsity": scheme, "calibration_data": str(calibration)}
    quantized = api.compile(str(model), stage="sparsity", **common)
    grouped = [op for op in quantized.module.walk() if isinstance(op, LinearOp) and op.group_size]
    assert grouped, "the outlier channels should give the FFN's second linear group scales"
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3, seed=9)
    got = api.compile(str(model), stage="esact", **common).simulate(inputs)
    np.testing.assert_array_equal(got.outputs[next(iter(got.outputs))],
                                  quantized.run(inputs)[next(iter(got.outputs))])
