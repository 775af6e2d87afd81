"""Sanger end to end: `--sparsity sanger` binaries against the INT8 reference interpreter.

- digits ViT (every op on the accelerator): the binary's logits equal the interpreter's bit for
  bit, with a uniform threshold and with per-layer ones;
- real exported fixtures (BERT with a padding mask, GPT-2 causal): every mask SANGER_PREDICT
  writes equals the interpreter's `sanger.predict_mask` result bit for bit (their outputs differ
  from the interpreter's by the host segments' float rounding only, as dense binaries do);
- MAC accounting: the report executes the dense MACs minus exactly the QK and PV work of the
  positions the interpreter's masks drop;
- the command-line path: esact-cc -> esact-run equals esact-cc --run (the interpreter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from in_process_tool import run_in_process

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialects.sanger import PredictMaskOp
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.runtime import isa_table
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

MODEL = load_bundled_model()
CONFIG = load_config()
FIXTURES = Path(__file__).parents[2] / "fixtures" / "models"


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sanger") / "calibration.npz"
    np.savez(path, **{MODEL.input_name: MODEL.calibration_images[:32]})
    return str(path)


class MaskRecorder(Interpreter):
    """The reference interpreter, keeping every predicted mask [B, H, Lq, Lk] and the widths
    of the attention reading it."""

    def __init__(self, store):
        super().__init__(store)
        self.masks: list[np.ndarray] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, PredictMaskOp):
            self.masks.append(np.asarray(outputs[0]))
        return outputs


def reference_masks(model: api.CompiledModel, inputs) -> tuple[dict, list[np.ndarray]]:
    recorder = MaskRecorder(model.store)
    outputs = recorder.run_function(main_function(model.module), inputs)
    return outputs, recorder.masks


def compile_both(path, options: list[str], **extra):
    settings = {"sparsity": "sanger", "sparsity_option": options, **extra}
    return (api.compile(path, stage="sparsity", **settings),
            api.compile(path, stage="esact", **settings).program())


def removed_macs(module, masks: list[np.ndarray]) -> int:
    """QK (depth d) and PV (depth dv) MACs of the positions the masks drop."""
    removed = 0
    for op, mask in zip((o for o in module.walk() if isinstance(o, PredictMaskOp)), masks):
        attention = next(iter(op.result.uses)).operation
        heads = op.num_heads.value.data
        d = attention.q.type.get_shape()[2] // heads
        dv = attention.v.type.get_shape()[2] // heads
        removed += int((~mask).sum()) * (d + dv)
    return removed


@pytest.fixture
def recorded_predictions(monkeypatch):
    """Every (fields, mask) SANGER_PREDICT writes in the functional model, in program order."""
    written: list[tuple[dict, np.ndarray]] = []
    kernel = isa_table.INSTRUCTION_KERNELS["sanger_predict"]

    def recording(machine, fields):
        kernel(machine, fields)
        written.append((dict(fields), machine.view("mask_addr").astype(bool).copy()))

    monkeypatch.setitem(isa_table._KERNELS, "sanger_predict", recording)
    return written


@pytest.mark.parametrize("options", [["threshold=0.05"],
                                     ["threshold=0.02", "bits=2", "1:threshold=0.1",
                                      "3:bits=8"]], ids=["uniform", "per-layer"])
def test_digits_binary_equals_the_interpreter_and_counts_the_removed_work(calibration, options):
    # all 4 layers keep every query row (esact-dead-rows would leave layer 3, one row, dense)
    reference, program = compile_both(MODEL.onnx_path, options, calibration_data=calibration,
                                      dead_rows=False)
    dense = api.compile(MODEL.onnx_path, stage="esact", calibration_data=calibration,
                        dead_rows=False).program()
    for image in MODEL.test_images[:2]:
        inputs = {MODEL.input_name: image[None]}
        expected, masks = reference_masks(reference, inputs)
        result = run_program(program, inputs, CONFIG)
        np.testing.assert_array_equal(result.outputs["logits"], expected["logits"])
    dense_total = run_program(dense, inputs, CONFIG).report["total"]
    total = result.report["total"]
    removed = removed_macs(reference.module, masks)
    assert removed > 0 and len(masks) == 4
    assert total["macs_dense"] == dense_total["macs_dense"]
    assert total["macs_executed"] == dense_total["macs_executed"] - removed


@pytest.mark.parametrize("fixture", ["bert_tiny_dynamo18", "gpt2_tiny_dynamo18"])
def test_fixture_masks_on_the_hardware_equal_the_interpreters(fixture, recorded_predictions):
    path = FIXTURES / f"{fixture}.onnx"
    inputs = dict(np.load(FIXTURES / f"{fixture}.inputs.npz"))
    reference, program = compile_both(path, ["threshold=0.05"])
    expected, masks = reference_masks(reference, inputs)
    result = run_program(program, inputs, CONFIG)
    heads = [m.shape[1] for m in masks]
    assert len(recorded_predictions) == sum(heads)  # batch 1: one instruction per head
    written = iter(recorded_predictions)
    for mask in masks:
        for h in range(mask.shape[1]):
            fields, on_chip = next(written)
            np.testing.assert_array_equal(on_chip, mask[0, h])
    causal = {fields["causal"] for fields, _ in recorded_predictions}
    assert causal == ({1} if fixture.startswith("gpt2") else {0})
    if fixture.startswith("bert"):
        assert {fields["has_add_mask"] for fields, _ in recorded_predictions} == {1}
    assert sum(int((~m).sum()) for m in masks) > 0
    for name, value in expected.items():  # host segments round differently, as when dense
        np.testing.assert_allclose(result.outputs[name], value, atol=1e-5)


def test_the_command_line_tools_agree_bit_for_bit(tmp_path, calibration):
    """esact-cc --sparsity sanger -> .esb -> esact-run equals esact-cc --run at the sparsity
    stage (the reference interpreter), per-layer thresholds included."""
    np.save(tmp_path / "image.npy", MODEL.test_images[:1])
    common = [str(MODEL.onnx_path), "--calibration-data", calibration, "--sparsity", "sanger",
              "--sparsity-option", "threshold=0.05", "--sparsity-option", "2:threshold=0.1"]
    feed = ["--input", f"{MODEL.input_name}=image.npy"]
    for command in (["esact-cc", *common, "-o", "model.esb"],
                    ["esact-run", "model.esb", *feed, "--output-dir", "binary"],
                    ["esact-cc", *common, "--compile-to", "sparsity", "-o", "model.mlir",
                     "--run", *feed, "--output-dir", "reference"]):
        done = run_in_process(*command, cwd=tmp_path)  # the outputs are the subject
        assert done.returncode == 0, done.stderr.decode()
    np.testing.assert_array_equal(np.load(tmp_path / "binary" / "logits.npy"),
                                  np.load(tmp_path / "reference" / "logits.npy"))
    listing = run_in_process("esact-objdump", "-d", "model.esb", cwd=tmp_path).stdout.decode()
    assert listing.count("sanger_predict") == listing.count("sanger_pack") > 0
