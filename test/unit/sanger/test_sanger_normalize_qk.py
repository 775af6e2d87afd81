"""Sanger's `normalize_qk: inner_product` (unit-norm Q and K rows before the low-bit
quantization, the product times both norms): the kernel, the option at every level, and the
binary equal to the INT8 interpreter bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from esact_cc.runtime.sanger_kernels import predicted_logits, score_scale, unit_codes

MODEL = load_bundled_model()


def test_unit_codes_are_unit_rows_at_full_scale_and_keep_the_norms():
    codes = np.array([[3, -4, 0, 0], [0, 0, 0, 0], [127, 127, -127, 127]], np.int8)
    unit, norms = unit_codes(codes, 4)
    np.testing.assert_allclose(norms, [5.0, 0.0, 254.0])
    assert unit.tolist() == [[4, -6, 0, 0], [0, 0, 0, 0], [4, 4, -4, 4]]  # round(0.6*7)=4


def test_normalized_logits_follow_the_exact_ones_where_plain_low_bits_lose_small_rows():
    # one key row 30x smaller than the rest: 4-bit codes of the plain quantizer (threshold =
    # the tensor's max) round it to zero, the per-row unit norm keeps its direction
    rng = np.random.default_rng(0)
    q8 = rng.integers(-127, 128, (6, 16)).astype(np.int8)
    k8 = rng.integers(-127, 128, (5, 16)).astype(np.int8)
    k8[2] = np.clip(np.rint(k8[2] / 30.0), -127, 127).astype(np.int8)
    exact = q8.astype(np.float64) @ k8.astype(np.float64).T
    plain = predicted_logits(q8, k8, 4, score_scale(1.0, 1.0, 1.0, 4))
    normed = predicted_logits(q8, k8, 4, score_scale(1.0, 1.0, 1.0, 4, normalize=True), True)
    assert not plain[:, 2].any()
    assert np.corrcoef(normed[:, 2], exact[:, 2])[0, 1] > 0.9
    # the norms are multiplied back in INT8 units: at 8 bits the logits are the exact ones
    fine = predicted_logits(q8, k8, 8, score_scale(1.0, 1.0, 1.0, 8, normalize=True), True)
    assert np.abs(fine - exact).max() < 0.02 * np.abs(exact).max()


def test_unknown_value_is_one_error_naming_the_choices():
    with pytest.raises(CompileError, match="normalize-qk.*inner_product"):
        api.compile(MODEL.onnx_path, stage="sparsity", sparsity="sanger",
                    sparsity_option=["normalize_qk=inner"])


def test_binary_equals_the_interpreter_and_pays_for_the_norms(tmp_path):
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **{MODEL.input_name: MODEL.calibration_images[:32]})
    inputs = {MODEL.input_name: MODEL.test_images[:1]}
    predict_pj, masks = {}, {}
    for normalize in ("none", "inner_product"):
        options = dict(calibration_data=str(calibration), sparsity="sanger", dead_rows=False,
                       sparsity_option=["threshold=0.02", f"normalize_qk={normalize}"])
        reference = api.compile(MODEL.onnx_path, stage="sparsity", **options)
        flags = {op.normalize_qk is not None for op in reference.module.walk()
                 if isinstance(op, PredictMaskOp)}
        assert flags == {normalize == "inner_product"}
        program = api.compile(MODEL.onnx_path, stage="esact", **options).program()
        run = run_program(program, inputs, load_config())
        assert np.array_equal(run.outputs["logits"], reference.run(inputs)["logits"])
        predict_pj[normalize] = run.report["components"]["predict"]["energy_on_chip_pj"]
        masks[normalize] = run.report["components"]["qk"]["macs_executed"]
    assert predict_pj["inner_product"] > predict_pj["none"]
    assert masks["inner_product"] != masks["none"]  # another prediction, other kept keys
