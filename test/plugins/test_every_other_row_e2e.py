"""The test-defined scheme end to end: its constant masks lower through the one masked linear /
attention lowering to an .esb that the functional model runs bit-identically to the INT8
reference interpreter, and the report's executed MACs are the dense MACs minus exactly the
work the masks drop, counted here by hand."""

from __future__ import annotations

import numpy as np
import pytest

import every_other_row as scheme_module
from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialects import transformer
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from esact_cc.sparsity.registry import register_scheme, unregister_scheme

BUNDLED = load_bundled_model()
CONFIG = load_config()
OPTIONS = {"sparsity": "every_other_row", "sparsity_option": ["seed=5", "2:key-keep=0.3"]}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, **{BUNDLED.input_name: BUNDLED.calibration_images[:16]})
    register_scheme(scheme_module.SCHEME)
    yield str(path)
    unregister_scheme(scheme_module.NAME)


def _skipped_macs(module, store) -> int:
    """Dense minus executed MAC-array work the masks imply: a reused row skips its row of every
    row-masked linear and its attention rows; a computed row skips the keys its mask drops
    (QK and PV, per head)."""
    skipped = 0
    for op in module.walk():
        if not isinstance(op, (transformer.LinearOp, transformer.AttentionOp)) or op.rows is None:
            continue
        rows = np.asarray(store[op.rows.owner.weight_name.data])
        reused = int((rows >= 0).sum())
        if isinstance(op, transformer.LinearOp):
            k, n = op.weight.type.get_shape()
            skipped += reused * k * n
            continue
        _, length, width = op.q.type.get_shape()
        spa = np.asarray(store[op.spa.owner.weight_name.data]).astype(bool)
        heads = spa.shape[0]
        dropped_keys = int((~spa[:, rows < 0, :]).sum())
        skipped += 2 * (reused * length * width + dropped_keys * (width // heads))
    return skipped


def test_the_scheme_runs_end_to_end_with_exact_mac_accounting(calibration):
    image = BUNDLED.test_images[:1]
    reference = api.compile(BUNDLED.onnx_path, stage="sparsity", calibration_data=calibration,
                            **OPTIONS)
    program = api.compile(BUNDLED.onnx_path, stage="esact", calibration_data=calibration,
                          **OPTIONS).program()
    dense = api.compile(BUNDLED.onnx_path, stage="esact", calibration_data=calibration).program()
    result = run_program(program, {BUNDLED.input_name: image}, CONFIG)
    dense_report = run_program(dense, {BUNDLED.input_name: image}, CONFIG).report

    np.testing.assert_array_equal(result.outputs["logits"],
                                  reference.run({BUNDLED.input_name: image})["logits"])
    total, dense_total = result.report["total"], dense_report["total"]
    assert total["macs_dense"] == dense_total["macs_dense"]
    skipped = _skipped_macs(reference.module, reference.store)
    assert skipped > 0
    assert total["macs_executed"] == dense_total["macs_executed"] - skipped
