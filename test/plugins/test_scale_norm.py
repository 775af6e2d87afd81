"""The test-defined normalization op ScaleNorm (scale_norm*.py beside this file) is four files
and edits no package file: the lift finds its pattern in its phase, every pass that asks
"is this a norm" takes it (layer role, dead rows), and the compiled binary runs it on RMSNORM
bit-identically to the INT8 reference interpreter, which matches onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import scale_norm_interpreter  # noqa: F401  (registers the op's semantics)
import scale_norm_lift
import scale_norm_lowering  # noqa: F401  (registers the op's lowering rule)
from esact_cc import api
from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.interpreter.reference_interpreter import registered_ops
from esact_cc.passes.lift_transformer import lift_phases
from esact_cc.passes.lift_transformer_pattern import register_lift_pattern, unregister_lift_pattern
from esact_cc.passes.lowering_state import registered_lowerings
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from scale_norm import ScaleNormOp

REPOSITORY = Path(__file__).resolve().parents[2]
SEQ, WIDTH, FFN = 8, 16, 32
SCALES = (1.7, 0.6)
ROWS = (0, 5)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The pattern registered itself on import; other test modules of this worker find the
    registry as they would without this file."""
    yield
    unregister_lift_pattern(scale_norm_lift.ScaleNormPattern)


def scale_norm_block() -> onnx.ModelProto:
    """x -> ScaleNorm -> FFN (ReLU) -> + -> ScaleNorm -> token rows ROWS (the output)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("eps", np.array(1e-5, np.float32)),
        ("g0", np.array(SCALES[0], np.float32)), ("g1", np.array(SCALES[1], np.float32)),
        ("w1", (rng.standard_normal((WIDTH, FFN)) / 4).astype(np.float32)),
        ("b1", (rng.standard_normal(FFN) / 10).astype(np.float32)),
        ("w2", (rng.standard_normal((FFN, WIDTH)) / 6).astype(np.float32)),
        ("b2", (rng.standard_normal(WIDTH) / 10).astype(np.float32)),
        ("rows", np.array(ROWS, np.int64)))]
    nodes = []
    for i, source in enumerate(("x", "residual")):
        nodes += [
            helper.make_node("ReduceSumSquare", [source], [f"ss{i}"], axes=[-1], keepdims=1,
                             name=f"norm{i}/sum_squares"),
            helper.make_node("Add", [f"ss{i}", "eps"], [f"se{i}"], name=f"norm{i}/add_eps"),
            helper.make_node("Sqrt", [f"se{i}"], [f"root{i}"], name=f"norm{i}/sqrt"),
            helper.make_node("Div", [source, f"root{i}"], [f"unit{i}"], name=f"norm{i}/div"),
            helper.make_node("Mul", [f"unit{i}", f"g{i}"], [f"n{i}"], name=f"norm{i}/scale"),
        ]
        if i == 0:
            nodes += [
                helper.make_node("MatMul", ["n0", "w1"], ["h1"], name="ffn/up"),
                helper.make_node("Add", ["h1", "b1"], ["h1b"], name="ffn/up_bias"),
                helper.make_node("Relu", ["h1b"], ["act"], name="ffn/relu"),
                helper.make_node("MatMul", ["act", "w2"], ["h2"], name="ffn/down"),
                helper.make_node("Add", ["h2", "b2"], ["h2b"], name="ffn/down_bias"),
                helper.make_node("Add", ["n0", "h2b"], ["residual"], name="ffn/residual"),
            ]
    nodes.append(helper.make_node("Gather", ["n1", "rows"], ["picked"], axis=1, name="picked"))
    graph = helper.make_graph(
        nodes, "scale_norm_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, WIDTH])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, len(ROWS), WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scale_norm") / "block.onnx"
    onnx.save(scale_norm_block(), path)
    return str(path)


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(4).standard_normal((1, SEQ, WIDTH)).astype(np.float32)}


def test_every_registry_finds_the_op_and_no_package_file_names_it():
    phase = next(p for p in lift_phases() if any(isinstance(q, scale_norm_lift.ScaleNormPattern)
                                                for q in p))
    assert {type(q).__name__ for q in phase} == {"RmsNormPattern", "ScaleNormPattern"}
    assert ScaleNormOp.name in registered_ops() and ScaleNormOp in registered_lowerings()
    package = [p for folder in ("esact_cc", "dialects", "passes", "runtime")
               for p in (REPOSITORY / folder).rglob("*.py")]
    assert len(package) > 100
    assert not [p for p in package if "scale_norm" in p.read_text() or "ScaleNorm" in p.read_text()]


def test_a_second_pattern_on_the_same_phase_and_anchor_is_refused():
    class Twin(scale_norm_lift.ScaleNormPattern):
        pass

    with pytest.raises(ValueError, match="share phase 50 and anchor ReduceSumSquare"):
        register_lift_pattern(Twin)


def test_without_its_pattern_the_norm_stays_on_the_host(model_path):
    unregister_lift_pattern(scale_norm_lift.ScaleNormPattern)
    try:
        lifted = api.compile(model_path, stage="transformer")
    finally:
        register_lift_pattern(scale_norm_lift.ScaleNormPattern)
    assert not [op for op in lifted.module.walk() if isinstance(op, ScaleNormOp)]
    host_ops = [op.op_type for op in lifted.module.walk() if isinstance(op, OnnxOperation)]
    assert host_ops.count("ReduceSumSquare") == 2


def test_lifted_op_is_a_norm_and_equals_onnxruntime(model_path, inputs):
    lifted = api.compile(model_path, stage="transformer")
    norms = [op for op in lifted.module.walk() if isinstance(op, ScaleNormOp)]
    assert len(norms) == 2
    assert all(op.attributes["role"].data == "norm" for op in norms)
    gammas = [lifted.store[op.gamma.owner.weight_name.data] for op in norms]
    np.testing.assert_array_equal(np.concatenate(gammas), np.float32(SCALES))
    expected = onnxruntime.InferenceSession(model_path).run(None, inputs)[0]
    np.testing.assert_allclose(lifted.run(inputs)["picked"], expected, rtol=1e-5, atol=1e-6)


def test_the_binary_runs_it_on_rmsnorm_like_the_interpreter(model_path, inputs):
    reference = api.compile(model_path, stage="quantized")
    norms = [op for op in reference.module.walk() if isinstance(op, ScaleNormOp)]
    # dead rows: every op is row-wise, so only the rows of the output are computed
    assert [op.result.type.get_shape()[1] for op in norms] == [len(ROWS)] * 2
    assert any(isinstance(op, SelectRowsOp) for op in reference.module.walk())
    program = api.compile(model_path, stage="esact").program()
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["picked"], reference.run(inputs)["picked"])
    norm_rows = [i.fields["rows"] for i in program.instructions if i.opcode_name == "rmsnorm"]
    assert sum(norm_rows) == 2 * len(ROWS)
