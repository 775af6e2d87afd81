"""SpAtten end to end: `--sparsity spatten` binaries against the INT8 reference interpreter.

- digits ViT: logits bit for bit equal, uniform and per-layer keep ratios; the cascade prunes
  (token and head masks shrink layer by layer, never re-admit);
- MAC accounting: the report executes the dense MACs minus exactly the QK and PV work of the
  (head, query, key) positions the interpreter's masks drop;
- a real exported fixture (BERT, padding mask): the scores SPATTEN_SCORE accumulates and the
  masks equal the interpreter's bit for bit;
- the command-line path: esact-cc -> esact-run equals esact-cc --run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from in_process_tool import run_in_process

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialects.spatten import SelectOp
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

MODEL = load_bundled_model()
CONFIG = load_config()
FIXTURES = Path(__file__).parents[2] / "fixtures" / "models"


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("spatten") / "calibration.npz"
    np.savez(path, **{MODEL.input_name: MODEL.calibration_images[:32]})
    return str(path)


class SelectRecorder(Interpreter):
    """The reference interpreter, keeping every spatten.select's results."""

    def __init__(self, store):
        super().__init__(store)
        self.selected: list[tuple[np.ndarray, ...]] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, SelectOp):
            self.selected.append(tuple(np.asarray(o) for o in outputs))
        return outputs


def reference_run(model: api.CompiledModel, inputs):
    recorder = SelectRecorder(model.store)
    return recorder.run_function(main_function(model.module), inputs), recorder.selected


def compile_both(path, options: list[str], **extra):
    settings = {"sparsity": "spatten", "sparsity_option": options, **extra}
    return (api.compile(path, stage="sparsity", **settings),
            api.compile(path, stage="esact", **settings).program())


def removed_macs(module, selected) -> int:
    removed = 0
    for op, (tokens, heads, _, _) in zip((o for o in module.walk() if isinstance(o, SelectOp)),
                                         selected):
        attention = next(iter(op.tokens.uses)).operation
        n = op.num_heads.value.data
        d = attention.q.type.get_shape()[2] // n
        dv = attention.v.type.get_shape()[2] // n
        t, h = tokens.astype(bool), heads.astype(bool)
        kept = h[:, :, None, None] & t[:, None, :, None] & t[:, None, None, :]
        removed += int((~kept).sum()) * (d + dv)
    return removed


@pytest.mark.parametrize("options", [["token_keep=0.7", "head_keep=0.75"],
                                     ["token_keep=0.9", "2:token_keep=0.5", "3:head_keep=0.5",
                                      "requant_threshold=0.5"]], ids=["uniform", "per-layer"])
def test_digits_binary_equals_the_interpreter_and_counts_the_removed_work(calibration, options):
    # all 4 layers keep every query row (esact-dead-rows would leave layer 3, one row, dense)
    reference, program = compile_both(MODEL.onnx_path, options, calibration_data=calibration,
                                      dead_rows=False)
    dense = api.compile(MODEL.onnx_path, stage="esact", calibration_data=calibration,
                        dead_rows=False).program()
    for image in MODEL.test_images[:2]:
        inputs = {MODEL.input_name: image[None]}
        expected, selected = reference_run(reference, inputs)
        result = run_program(program, inputs, CONFIG)
        np.testing.assert_array_equal(result.outputs["logits"], expected["logits"])
    assert len(selected) == 4 and selected[0][0].all() and selected[0][1].all()
    for before, after in zip(selected, selected[1:]):  # cascade: never re-admitted
        assert not (after[0].astype(bool) & ~before[0].astype(bool)).any()
        assert not (after[1].astype(bool) & ~before[1].astype(bool)).any()
    assert selected[-1][0].sum() < selected[0][0].sum()
    dense_total = run_program(dense, inputs, CONFIG).report["total"]
    total = result.report["total"]
    removed = removed_macs(reference.module, selected)
    assert removed > 0
    assert total["macs_dense"] == dense_total["macs_dense"]
    assert total["macs_executed"] == dense_total["macs_executed"] - removed


def test_bert_fixture_scores_on_the_hardware_equal_the_interpreters(monkeypatch):
    from esact_cc.runtime import isa_table

    written: list[np.ndarray] = []
    kernel = isa_table.INSTRUCTION_KERNELS["spatten_topk"]

    def recording(machine, fields):
        kernel(machine, fields)
        written.append(machine.view("out_scores_addr", "w")[0].copy())

    monkeypatch.setitem(isa_table._KERNELS, "spatten_topk", recording)
    path = FIXTURES / "bert_tiny_dynamo18.onnx"
    inputs = dict(np.load(FIXTURES / "bert_tiny_dynamo18.inputs.npz"))
    reference, program = compile_both(path, ["token_keep=0.6"])
    expected, selected = reference_run(reference, inputs)
    result = run_program(program, inputs, CONFIG)
    assert len(written) == len(selected) >= 2
    # TOPK of layer l + 1 starts from the scores layer l accumulated: compare those
    for on_chip, (tokens, _, scores, _) in zip(written[1:], selected):
        nxt = np.where(np.isfinite(on_chip), scores[0], -np.inf)
        np.testing.assert_array_equal(on_chip[np.isfinite(on_chip)], nxt[np.isfinite(nxt)])
    assert not selected[-1][0].all()
    for name, value in expected.items():  # host segments round differently, as when dense
        np.testing.assert_allclose(result.outputs[name], value, atol=1e-5)


def test_the_command_line_tools_agree_bit_for_bit(tmp_path, calibration):
    np.save(tmp_path / "image.npy", MODEL.test_images[:1])
    common = [str(MODEL.onnx_path), "--calibration-data", calibration, "--sparsity", "spatten",
              "--sparsity-option", "token_keep=0.6", "--sparsity-option", "2:head_keep=0.5"]
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
    # layer 3 computes only token 0 (esact-dead-rows): nothing to prune there, left dense
    assert listing.count("spatten_topk") == 3 and listing.count("spatten_score") > 0


def test_lsb_refetches_are_charged_as_dram_reads(calibration):
    """requant_threshold 1 re-fetches every scored row's LSBs (L = 17, d = 16, 4 heads, layers
    1-3 see the surviving tokens), 0 none: the difference is exactly those bytes, the Q LSBs
    of each kept row and the kept K rows' once per head."""
    inputs = {MODEL.input_name: MODEL.test_images[:1]}
    totals, selected = {}, None
    for threshold in (0.0, 1.0):
        reference, program = compile_both(MODEL.onnx_path, ["token_keep=0.8",
                                                            f"requant_threshold={threshold}"],
                                          calibration_data=calibration)
        totals[threshold] = run_program(program, inputs, CONFIG).report["total"]["dram_bytes"]
        _, selected = reference_run(reference, inputs)
    d, heads = 16, 4
    refetched = sum(2 * int(t.sum()) * d * 4 // 8 * heads
                    for t, _, _, _ in selected)
    assert totals[1.0] - totals[0.0] == refetched > 0


def test_gpt2_fixture_without_protected_tokens_matches_the_interpreter():
    """Causal attention, nothing protected: a kept row always sees its own key, pruned rows
    are 0 on both sides (outputs agree to the host segments' rounding, as when dense)."""
    path = FIXTURES / "gpt2_tiny_dynamo18.onnx"
    inputs = dict(np.load(FIXTURES / "gpt2_tiny_dynamo18.inputs.npz"))
    reference, program = compile_both(path, ["token_keep=0.4", "head_keep=0.5", "protect=0"])
    expected, selected = reference_run(reference, inputs)
    assert not selected[-1][0].all() and not selected[-1][1].all()
    result = run_program(program, inputs, CONFIG)
    for name, value in expected.items():
        np.testing.assert_allclose(result.outputs[name], value, atol=1e-5)
