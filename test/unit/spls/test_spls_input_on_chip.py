"""The SPLS prediction's HLog input X (the layer norm's output, which the Q / K / V GEMMs read
from VBUF under keep-on-chip) is read from that VBUF tile too (passes/spls_projection.py
`hlog_input`): no STORE of X to DRAM and LOAD back per layer, outputs bit-identical to the
DRAM round trip, and the binary equal to the reference interpreter."""

from __future__ import annotations

import numpy as np
from esact_cc.dialects import esact

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model

SPLS = ["hlog-bits=6", "window=8", "threshold=0.8", "first-reference=1"]


def _compile(calibration: str, stage: str = "esb", **options) -> api.CompiledModel:
    return api.compile(str(load_bundled_model().onnx_path), stage=stage,
                       calibration_data=calibration, sparsity="spls", sparsity_option=SPLS,
                       **options)


def _dma_at(compiled: api.CompiledModel, opcode: str, node: str) -> int:
    return sum(1 for op in compiled.module.body.block.ops
               if isinstance(op, esact.InstructionOp) and op.name == f"esact.{opcode}"
               and node in str(op.location))


def test_prediction_reads_its_input_from_the_kept_layer_norm_output(calibration) -> None:
    bundled = load_bundled_model()
    image = {bundled.input_name: np.load(bundled.onnx_path.parent / "digits_test.npz")
             ["images"][:1]}
    kept, through = _compile(calibration), _compile(calibration, keep_on_chip=False)
    # layers 0-2 predict (layer 3 computes one row: left dense); their ln1 output is never
    # written to DRAM nor LOADed back (it was, once per layer, for the prediction's HLOG)
    for layer in range(3):
        node = f"/blocks.{layer}/ln1/LayerNormalization"
        assert _dma_at(kept, "store", node) == 0
        assert _dma_at(through, "store", node) == 1
    after, before = kept.simulate(image), through.simulate(image)
    assert np.array_equal(after.outputs["logits"], before.outputs["logits"])
    reference = _compile(calibration, stage="sparsity").run(image)
    assert np.array_equal(after.outputs["logits"], reference["logits"])
    assert after.report["total"]["cycles"] < before.report["total"]["cycles"]
