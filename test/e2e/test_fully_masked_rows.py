"""Query rows whose every key is masked (docs/design.md section 6, "rows whose every key is
masked"): the binary equals its INT8 interpreter bit for bit on them, dense and with each
sparsity scheme, and the dense program computes them as onnxruntime does (a large finite
negative mask: every key equally, no NaN).

Two mask forms reach the hardware differently, so both are covered: DeBERTa's pairwise
padding mask is per query ([B, 1, L, L], ADDed before the softmax; its padded query rows see
no key), and a BERT encoder's padding mask is one row ([B, 1, 1, L], added inside TOPK and
SOFTMAX; an input that is all padding masks every row). SPLS adds the mask to its predicted
logits as a number, so a fully masked row still selects k keys; the attention's SPA excludes
the rest exactly.
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from deberta_graphs import deberta_inputs, deberta_model

from esact_cc import api
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

SCHEMES = {
    "dense": {},
    "spls-cosprob": {"sparsity": "spls", "sparsity_option": ["window=4", "threshold=0.5"]},
    "spls-topk-overlap": {"sparsity": "spls", "sparsity_option": [
        "attention=topk", "similarity=overlap", "threshold=0.3"]},
    "sanger": {"sparsity": "sanger"},
    "spatten": {"sparsity": "spatten"},
}
K_RATIO_ONE = {"sparsity": "spls",
               "sparsity_option": ["attention=topk", "k-ratio=1", "threshold=2.0"]}
"""SPA keeps every key, no row reused: the dense program's values, masked rows included."""


def deberta(tmp_path: Path) -> tuple[Path, str, dict[str, np.ndarray]]:
    """The DeBERTa model, its calibration file and inputs whose last 2 query rows see no key."""
    path = tmp_path / "deberta.onnx"
    onnx.save(deberta_model(), path)
    samples = [deberta_inputs(seed=20 + i) for i in range(4)]
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    return path, str(calib), deberta_inputs(padding=2)


def encoder(tmp_path: Path) -> tuple[Path, str, dict[str, np.ndarray]]:
    """A BERT encoder (row padding mask), its calibration file and an all-padding input."""
    path = tmp_path / "encoder.onnx"
    onnx.save(encoder_graphs.encoder(layers=1, seq=16, hidden=32, heads=4, seed=5), path)
    samples = [encoder_graphs.encoder_inputs(seed=30 + i) for i in range(4)]
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    inputs = encoder_graphs.encoder_inputs(padding=16)
    assert not inputs["attention_mask"].any()
    return path, str(calib), inputs


def binary_and_interpreter(path: Path, calib: str, inputs: dict[str, np.ndarray],
                           options: dict) -> tuple[np.ndarray, np.ndarray]:
    stage = "sparsity" if options else "quantized"
    golden = api.compile(path, stage=stage, calibration_data=calib, **options).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=calib, **options).program()
    (name, got), = run_program(program, inputs, load_config()).outputs.items()
    return got, golden[name]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_padded_query_rows_of_a_per_query_mask_are_bit_exact(tmp_path: Path,
                                                             scheme: str) -> None:
    path, calib, inputs = deberta(tmp_path)
    got, golden = binary_and_interpreter(path, calib, inputs, SCHEMES[scheme])
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, golden)


@pytest.mark.parametrize("scheme", ["dense", "spls-topk-overlap", "sanger", "spatten"])
def test_an_all_padding_input_under_a_row_mask_is_bit_exact(tmp_path: Path,
                                                            scheme: str) -> None:
    path, calib, inputs = encoder(tmp_path)
    got, golden = binary_and_interpreter(path, calib, inputs, SCHEMES[scheme])
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, golden)


@pytest.mark.parametrize("model", [deberta, encoder])
def test_k_ratio_one_computes_masked_rows_as_the_dense_program(tmp_path: Path, model) -> None:
    path, calib, inputs = model(tmp_path)
    dense = api.compile(path, stage="quantized", calibration_data=calib).run(inputs)
    got, golden = binary_and_interpreter(path, calib, inputs, K_RATIO_ONE)
    (name, expected), = dense.items()
    np.testing.assert_array_equal(golden, expected)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("model", [deberta, encoder])
def test_dense_masked_rows_attend_every_key_like_onnxruntime(tmp_path: Path, model) -> None:
    """A -10000 / float32-minimum mask on every key: onnxruntime's softmax sees equal (or
    nearly equal) logits; the FP32 interpreter gives its values, the INT8 program close ones."""
    path, calib, inputs = model(tmp_path)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    fp32 = next(iter(api.compile(path, stage="transformer").run(inputs).values()))
    assert np.abs(fp32 - expected).max() <= 1e-4 * np.abs(expected).max()
    got, _ = binary_and_interpreter(path, calib, inputs, {})
    a, b = got.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.99
