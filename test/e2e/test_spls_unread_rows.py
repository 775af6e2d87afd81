"""Reused rows nothing reads are not filled: with SPLS row reuse, the outputs of Q (read by the
attention), of the attention (read by O) and of FFN up (read by FFN down) only feed ops that
skip the same reused rows, so only O and FFN down, whose outputs join the residual stream,
SCATTER_ROWS their representatives' rows. The binary still equals the INT8 SPLS reference bit
for bit (the unfilled rows are never read)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
from vit_graph import vit_model

from esact_cc import api

SPLS = {"sparsity": "spls", "sparsity_option": ["window=4", "threshold=0.6"]}


def test_only_residual_outputs_scatter_and_the_binary_equals_the_reference(
        tmp_path: Path) -> None:
    path = tmp_path / "vit.onnx"
    onnx.save(vit_model(1), path)  # 2 layers; the last computes only CLS (dead rows): dense
    calibration = tmp_path / "calib.npz"
    rng = np.random.default_rng(1)
    np.savez(calibration, pixel_values=rng.uniform(0, 1, (8, 1, 1, 8, 8)).astype(np.float32))
    compiled = api.compile(path, stage="esb", calibration_data=str(calibration), **SPLS)
    opcodes = collections.Counter(i.opcode_name for i in compiled.program().instructions)
    assert opcodes["scatter_rows"] == 2  # layer 0's O and FFN down (one column tile each)
    reference = api.compile(path, stage="sparsity", calibration_data=str(calibration), **SPLS)
    for seed in range(3):
        image = {"pixel_values": np.random.default_rng(seed + 10).uniform(
            0, 1, (1, 1, 8, 8)).astype(np.float32)}
        run = compiled.simulate(image)
        assert run.report["spls"]["reused_row_fraction"] > 0
        np.testing.assert_array_equal(run.outputs["logits"], reference.run(image)["logits"])
