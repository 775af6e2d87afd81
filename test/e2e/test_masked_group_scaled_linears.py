"""INT8 linears with per-group input scales (outlier channels found by calibration) take
SPLS's masks like per-tensor-scaled ones: reused rows are not computed (row masks: Q/K/V of
the first layer, FFN up, FFN down), K and V get key masks with `attention=topk`, and the
binary equals the INT8 reference interpreter bit for bit, also when one sequence's input of
a grouped linear exceeds ABUF and is fed in input-column chunks per group."""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import onnx
import pytest
from esact_cc.dialects.transformer import LinearOp
from onnx import numpy_helper

from esact_cc import api

SEQ, HIDDEN, HEADS, FFN = 32, 128, 4, 512
OUTLIERS = ("/embeddings/LayerNorm.weight", "output/LayerNorm.weight", "intermediate/dense.weight")
"""Initializers whose first 8 output channels are scaled 40x: the inputs of Q/K/V, FFN up
and FFN down then have outlier channels, which `quantize` gives their own group scales."""
SETTINGS = {
    "cosprob": ["window=4", "threshold=0.5"],
    "topk-overlap": ["attention=topk", "similarity=overlap", "threshold=0.3"],
}
MASKED_ROLES = {"cosprob": {"q", "ffn_up", "ffn_down"},  # K and V: dense attention reads all keys
                "topk-overlap": {"q", "k", "v", "ffn_up", "ffn_down"}}
SMALL_ABUF = 'name = "small-abuf"\n[sram]\nactivation_buffer = 16384\n'
"""12 KiB usable: one sequence's 32 x 512 FFN-down input does not fit, so it is chunked."""


def _outlier_encoder(path: Path) -> Path:
    model = encoder_graphs.encoder(layers=2, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=FFN, seed=3)
    for init in model.graph.initializer:
        if init.name.endswith(OUTLIERS):
            w = numpy_helper.to_array(init).copy()
            w[..., :8] *= 40.0
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, path)
    return path


def _compile_options(tmp_path: Path, setting: str) -> dict:
    samples = [encoder_graphs.encoder_inputs(seq=SEQ, padding=3, seed=s) for s in range(4)]
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    return {"sparsity": "spls", "sparsity_option": SETTINGS[setting],
            "calibration_data": str(calibration)}


@pytest.mark.parametrize("setting", SETTINGS)
def test_group_scaled_linears_are_masked_and_bit_exact(tmp_path: Path, setting: str) -> None:
    model = _outlier_encoder(tmp_path / "outliers.onnx")
    options = _compile_options(tmp_path, setting)
    masked = api.compile(str(model), stage="sparsity", **options)
    grouped = [op for op in masked.module.walk() if isinstance(op, LinearOp) and op.group_size]
    predicted = [op for op in grouped if op.attributes["layer"].value.data == 1]
    roles = {op.attributes["role"].data for op in predicted}
    assert roles == {"q", "k", "v", "ffn_up", "ffn_down"}, roles
    masked_roles = {op.attributes["role"].data for op in predicted if op.is_masked}
    assert masked_roles == MASKED_ROLES[setting], masked_roles
    if setting == "topk-overlap":
        assert {op.attributes["role"].data for op in predicted if op.keys} == {"k", "v"}
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3, seed=9)
    golden = masked.run(inputs)
    name = next(iter(golden))
    dense = api.compile(str(model), stage="quantized",
                        calibration_data=options["calibration_data"]).run(inputs)[name]
    assert not np.array_equal(golden[name], dense), "no row was reused: nothing is tested"
    got = api.compile(str(model), stage="esact", **options).simulate(inputs)
    np.testing.assert_array_equal(got.outputs[name], golden[name])


def test_group_scaled_linear_input_chunks_are_bit_exact(tmp_path: Path) -> None:
    model = _outlier_encoder(tmp_path / "outliers.onnx")
    options = _compile_options(tmp_path, "cosprob")
    hw = tmp_path / "small_abuf.toml"
    hw.write_text(SMALL_ABUF)
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3, seed=9)
    golden = api.compile(str(model), stage="sparsity", **options).run(inputs)
    name = next(iter(golden))
    compiled = api.compile(str(model), stage="esact", hw=str(hw), **options)
    chunked = [i for i in compiled.program().instructions if i.opcode_name == "gemm"
               and i.fields["has_row_mask"] and i.fields["accumulate"]]
    assert chunked, "no masked GEMM accumulated over input chunks"
    got = compiled.simulate(inputs, hw=str(hw))
    np.testing.assert_array_equal(got.outputs[name], golden[name])
