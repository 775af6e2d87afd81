"""esact-dead-rows end to end: the rows no output reads are not computed, and nothing else
changes.

- digits ViT (reads token 0 of its last layer): logits bit-identical with and without the
  pass, dense and with SPLS (which leaves the 1-query-row layer dense, saying so); layer 3
  runs Q, attention rows, O and FFN on 1 of 17 rows (its MACs exactly that), fewer cycles;
  the compile summary says what was removed;
- a model whose every row is read (ViT fixture returning last_hidden_state): IR unchanged;
  BERT with only its pooler output: the last layer on [CLS], the output bit-identical;
- batch 2 with two read rows: interpreter and binary equal theirs without the pass;
- the off switch: `--no-dead-rows` (esact-cc) and `dead_rows=False` (api).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from in_process_tool import run_in_process

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialect_registry import make_context
from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.pipeline import continue_pipeline, make_pass
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

MODEL = load_bundled_model()
CONFIG = load_config()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "models"
REUSING_SPLS = {"sparsity": "spls", "spls_option": ["hlog-bits=4", "window=4", "threshold=0.9"]}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dead_rows") / "calibration.npz"
    np.savez(path, **{MODEL.input_name: MODEL.calibration_images[:32]})
    return str(path)


def _selects(module) -> list[SelectRowsOp]:
    return [op for op in module.walk() if isinstance(op, SelectRowsOp)]


def _layer3_macs(length: int = 17, width: int = 64, ffn: int = 128, kept: int = 1) -> int:
    """K and V over every row, Q, QK^T, PV, O and the FFN over the kept rows."""
    return (2 * length * width * width + kept * (2 * width * width + 2 * length * width
                                                  + 2 * width * ffn))


@pytest.mark.parametrize("options", [{}, REUSING_SPLS], ids=["dense", "spls"])
def test_digits_logits_are_bit_identical_and_layer3_runs_one_row(calibration, options, capfd):
    programs = {on: api.compile(MODEL.onnx_path, stage="esb", calibration_data=calibration,
                                dead_rows=on, **options).program() for on in (True, False)}
    if options:
        assert "computes 1 of 17 query rows (esact-dead-rows" in capfd.readouterr().err
    for image in MODEL.test_images[:3]:
        inputs = {MODEL.input_name: image[None]}
        runs = {on: run_program(programs[on], inputs, CONFIG) for on in (True, False)}
        np.testing.assert_array_equal(runs[True].outputs["logits"], runs[False].outputs["logits"])
    narrowed, full = (runs[on].report for on in (True, False))
    if not options:  # (with SPLS, the full layer 3 also counts its prediction's work)
        assert full["layers"]["3"]["macs_dense"] == _layer3_macs(kept=17)
    assert narrowed["layers"]["3"]["macs_dense"] == _layer3_macs(kept=1)
    for layer in ("0", "1", "2"):
        assert narrowed["layers"][layer]["macs_executed"] == full["layers"][layer]["macs_executed"]
    assert narrowed["total"]["macs_executed"] < full["total"]["macs_executed"]
    assert narrowed["total"]["cycles"] < full["total"]["cycles"]


def esact_cc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """In process: the summary line and the IR are the subject, not the process."""
    done = run_in_process("esact-cc", *args, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr.decode()
    return subprocess.CompletedProcess(done.args, 0, done.stdout.decode(), done.stderr.decode())


def test_digits_ir_narrows_the_last_layer_and_the_summary_says_so(tmp_path):
    out = esact_cc(MODEL.onnx_path, "--compile-to", "quantized", "-o", tmp_path / "q.mlir")
    assert ("esact-cc: dead rows (esact-dead-rows; --no-dead-rows keeps them): 1 of 17 token "
            "rows computed from layer 3 on (2 select_rows)") in out.stderr
    text = (tmp_path / "q.mlir").read_text()
    assert text.count("transformer.select_rows") == 2
    final_norm = next(line for line in text.splitlines() if "/norm/LayerNormalization" in line)
    assert final_norm.split(" : ")[-1].startswith("(tensor<1x1x64xf32>, tensor<64xf32>, "
                                                  "tensor<64xf32>) -> tensor<1x1x64xf32>")


def test_the_off_switch_keeps_every_row(tmp_path):
    module = api.compile(MODEL.onnx_path, stage="quantized", dead_rows=False).module
    assert not _selects(module)
    out = esact_cc(MODEL.onnx_path, "--compile-to", "quantized", "--no-dead-rows", "-o",
                   tmp_path / "q.mlir")
    assert "dead rows" not in out.stderr
    assert "select_rows" not in (tmp_path / "q.mlir").read_text()


def test_a_model_whose_every_row_is_read_is_unchanged():
    path = FIXTURES / "vit_tiny_dynamo18.onnx"  # returns last_hidden_state (and the pooler)
    narrowed = api.compile(path, stage="quantized")
    full = api.compile(path, stage="quantized", dead_rows=False)
    assert not _selects(narrowed.module)
    assert narrowed.ir() == full.ir()


def test_bert_with_only_its_pooler_output_computes_cls_in_the_last_layer(tmp_path):
    import onnx

    model = onnx.load(FIXTURES / "bert_tiny_legacy17.onnx")
    pooler = [o for o in model.graph.output if o.name == "pooler_output"]
    del model.graph.output[:]
    model.graph.output.extend(pooler)  # last_hidden_state no longer an output
    onnx.save(model, tmp_path / "pooler_only.onnx")
    inputs = dict(np.load(FIXTURES / "bert_tiny_legacy17.inputs.npz"))
    compiled = {on: api.compile(tmp_path / "pooler_only.onnx", stage="esb", dead_rows=on)
                for on in (True, False)}
    narrowed = api.compile(tmp_path / "pooler_only.onnx", stage="quantized").module
    assert {op.kept for op in _selects(narrowed)} == {(0,)}
    runs = {on: compiled[on].simulate(inputs) for on in (True, False)}
    np.testing.assert_array_equal(runs[True].outputs["pooler_output"],
                                  runs[False].outputs["pooler_output"])
    assert runs[True].report["total"]["macs_executed"] < runs[False].report["total"]["macs_executed"]


BATCH2_LAYER = """
builtin.module attributes {esact.weight_store = "layer.npz"} {
  func.func @main(%x: tensor<2x4x8xf32> {onnx.name = "x"}) -> (tensor<2x2x8xf32> {onnx.name = "y"}) {
    %w = onnx.weight "w" : tensor<8x8xi8>
    %s = onnx.weight "s" : tensor<8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %g = onnx.weight "g" : tensor<8xf32>
    %ln = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %q = transformer.linear %ln, %w, %b weight_scale(%s) input_scale(0.02) : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %k = transformer.linear %ln, %w, %b weight_scale(%s) input_scale(0.02) : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %a = transformer.attention %q, %k, %k heads(2) scale(0.5) q_scale(0.03) k_scale(0.04) v_scale(0.04) p_scale(0.00787401572) : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %r = transformer.add %x, %a : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %f = transformer.linear %r, %w, %b weight_scale(%s) input_scale(0.03) : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %e = transformer.gelu %f approximate("none") : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %y = transformer.host(%e) : (tensor<2x4x8xf32>) -> tensor<2x2x8xf32> {
    ^bb0(%t: tensor<2x4x8xf32>):
      %i = onnx.Constant {value = dense<[2, 0]> : tensor<2xi64>} : () -> tensor<2xi64>
      %o = onnx.Gather %t, %i {axis = 1 : i64} : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x2x8xf32>
      transformer.yield %o : tensor<2x2x8xf32>
    }
    func.return %y : tensor<2x2x8xf32>
  }
}
"""


def _lowered(compiled: api.CompiledModel) -> api.CompiledModel:
    continue_pipeline(compiled.module, compiled.store, "quantized", "esact")
    return api.CompiledModel(compiled.module, compiled.store, "esact")


def test_batch_2_outputs_equal_those_without_the_pass(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "layer.npz", w=rng.integers(-127, 128, (8, 8)).astype(np.int8),
             s=np.full(8, 0.01, np.float32), b=rng.standard_normal(8).astype(np.float32),
             g=np.ones(8, np.float32))
    (tmp_path / "layer.mlir").write_text(BATCH2_LAYER)
    inputs = {"x": rng.standard_normal((2, 4, 8)).astype(np.float32)}
    full, narrowed = (api.load_ir(tmp_path / "layer.mlir") for _ in range(2))
    make_pass("esact-dead-rows").apply(make_context(), narrowed.module)
    # rows 0 and 2 of each batch element: the Q, attention, residual and FFN inputs narrowed
    assert [op.kept for op in _selects(narrowed.module)] == [(0, 2), (0, 2)]
    np.testing.assert_array_equal(narrowed.run(inputs)["y"], full.run(inputs)["y"])
    runs = [_lowered(c).simulate(inputs) for c in (narrowed, full)]
    np.testing.assert_array_equal(runs[0].outputs["y"], runs[1].outputs["y"])
    assert runs[0].report["total"]["macs_executed"] < runs[1].report["total"]["macs_executed"]
