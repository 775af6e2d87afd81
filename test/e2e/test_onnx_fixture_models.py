"""Real exporter output (tiny fixtures of test/fixtures/models): import, interpret, export.

At the `onnx` level the interpreter must reproduce the onnxruntime references stored with each
fixture, and the exported model must run in onnxruntime to the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from esact_cc.frontend.onnx_export import export_module
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import run_module

FIXTURES = Path(__file__).parents[1] / "fixtures" / "models"
MODELS = sorted(p.stem for p in FIXTURES.glob("*.onnx"))


def load(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"{name}.inputs.npz") as inputs, np.load(FIXTURES / f"{name}.ref.npz") as ref:
        return dict(inputs), dict(ref)


def test_fixtures_exist():
    assert len(MODELS) >= 6, MODELS


@pytest.mark.parametrize("name", MODELS)
def test_interpreter_and_export_match_onnxruntime(name):
    inputs, reference = load(name)
    module, store = import_onnx(FIXTURES / f"{name}.onnx", {k: v.shape for k, v in inputs.items()})
    outputs = run_module(module, inputs, store)
    assert list(outputs) == list(reference)
    for key, expected in reference.items():
        assert np.abs(outputs[key] - expected).max() <= 1e-4 * np.abs(expected).max(), key
    exported = export_module(module, store)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, (key, expected) in zip(session.run(None, inputs), reference.items(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max(), err_msg=key)
