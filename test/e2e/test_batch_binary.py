"""Batch > 1 end to end: a model with a static batch > 1 (host Conv stem and decoder around a
Transformer block) compiles, and its binary's outputs equal the INT8 interpreter's bit for bit,
dense and with SPLS, and follow onnxruntime for every batch element. Rows are tiled over the
batch (dense) or per batch element (masked); only the sequence length is bounded by the
buffers (an attention over L x L that does not fit is a one-line error)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from esact_cc import api

def _load(name: str, path: Path):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = _load("conv_block_graphs", Path(__file__).with_name("conv_block_graphs.py"))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


SPLS = {"sparsity": "spls", "sparsity_option": ["window=4", "threshold=0.5"]}


@pytest.mark.parametrize(("batch", "options"), [
    (3, {}), (2, SPLS), (4, SPLS),
    # Odd batches put a partial row tile in the K / V linears the SPLS overlap interleaves:
    # their epilogue once moved past the next GEMM that reuses its ACC tile (fixed).
    (3, SPLS),
], ids=["dense-3", "spls-2", "spls-4", "spls-3"])
def test_batched_binary_matches_the_interpreter(tmp_path: Path, batch: int,
                                                options: dict) -> None:
    path = tmp_path / "batch.onnx"
    onnx.save(graphs.conv_block_model(batch=batch), path)
    rng = np.random.default_rng(2)
    calibration = tmp_path / "calib.npz"
    np.savez(calibration, audio=rng.standard_normal((2, batch, 4, 32)).astype(np.float32))
    inputs = {"audio": rng.standard_normal((batch, 4, 32)).astype(np.float32)}
    compiled = api.compile(path, stage="esb", calibration_data=str(calibration), **options)
    result = compiled.simulate(inputs)
    got = result.outputs["waveform"]
    assert got.shape == (batch, 2, 64)
    golden = api.compile(path, stage="sparsity", calibration_data=str(calibration),
                         **options).run(inputs)["waveform"]
    np.testing.assert_array_equal(got, golden)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    # reused rows take their representative's values; each element is predicted as it is
    # alone (its own HLog scales): spls-2's second element is at 0.893
    floor = 0.88 if options else 0.99
    for index in range(batch):  # every batch element, not only the batch as a whole
        assert _cosine(got[index], expected[index]) >= floor
    if options:
        assert result.report["spls"]["reused_row_fraction"] > 0
