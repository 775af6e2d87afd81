"""Per-row INT8 probability scales (`quantize{probability-scales=row}`; docs/design.md
section 3, "Attention probabilities can be quantized per query row").

One attention over 512 tokens, built with onnx.helper, whose probabilities are what a trained
encoder's are at long sequences: one query row peaked (p about 0.5 on two huge tokens), which
sets the calibrated tensor scale to 1/127, and 510 diffuse rows (p about 1/512, below half a
step of 1/127, so rounded to 0 by that scale). Checked:
- per-row scales keep the diffuse rows (1% of FP32's norm off) where one calibrated scale
  zeroes them (over 90% off): the cause of all-MiniLM-L6-v2's 0.90 cosine at 512 tokens;
- the binary equals the INT8 interpreter bit for bit (QUANT_ROWS after SOFTMAX, the output
  DEQUANT per row), dense and with SPLS row reuse, and the SFU is charged QUANT_ROWS' passes;
- the option is typed, survives an IR round trip, and attention blocked over keys (no row
  over all keys fits) with per-row scales is one error line naming the option.
The model is calibrated and quantized by the passes, then compiled on from the quantized IR
(as `esact-opt -p 'calibrate,quantize{...}' | esact-cc -`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
from esact_cc.dialects.transformer import AttentionOp
from esact_cc.runtime.errors import CompileError
from onnx import TensorProto, helper, numpy_helper
from onnx_graph_builder import GraphBuilder  # test/helpers, on sys.path by test/conftest.py

from esact_cc import api
from esact_cc.dialect_registry import make_context
from esact_cc.pipeline import CompileOptions, continue_pipeline, make_pass

SEQ, HIDDEN, HEADS = 512, 16, 2


def attention_graph() -> onnx.ModelProto:
    """x [1, SEQ, HIDDEN] -> Q / K / V linears -> 2-head softmax(Q K^T / sqrt(d)) V -> y."""
    g = GraphBuilder(HIDDEN, np.random.default_rng(0))
    d = HIDDEN // HEADS
    split = g.init("split", np.array([1, SEQ, HEADS, d], np.int64))
    merge = g.init("merge", np.array([1, SEQ, HIDDEN], np.int64))
    qkv = g.heads("x", "/attention", split)
    scores = g.node("MatMul", [qkv["query"], qkv["key"]], "/attention/MatMul")
    scaled = g.node("Div", [scores, g.init("sqrt_d", np.array(np.sqrt(d), np.float32))],
                    "/attention/Div")
    probs = g.node("Softmax", [scaled], "/attention/Softmax", axis=-1)
    context = g.node("MatMul", [probs, qkv["value"]], "/attention/MatMul_1")
    heads_last = g.node("Transpose", [context], "/attention/Transpose", perm=[0, 2, 1, 3])
    for index, tensor in enumerate(g.inits):  # V does not read channel 0, the huge tokens'
        if tensor.name == "/attention/value.weight":
            weight = numpy_helper.to_array(tensor).copy()
            weight[0] = 0
            g.inits[index] = numpy_helper.from_array(weight, tensor.name)
    g.node("Reshape", [heads_last, merge], "y")
    graph = helper.make_graph(
        g.nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, HIDDEN])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def attention_input() -> np.ndarray:
    """Small rows (flat scores: diffuse attention) and two equal tokens 0 and 1 huge in
    channel 0, which row 0 attends to with p about 0.5 each (V does not read channel 0)."""
    x = (0.02 * np.random.default_rng(1).standard_normal((1, SEQ, HIDDEN))).astype(np.float32)
    x[0, :2, 0] = 8.0
    return x


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("prob_rows")
    x = attention_input()
    onnx.save(attention_graph(), folder / "attention.onnx")
    np.savez(folder / "calibration.npz", x=x)
    return folder / "attention.onnx", folder / "calibration.npz", x


@functools.cache
def _compiled(path: Path, calibration: Path, stage: str, scales: str = "row",
              sparsity: str = "dense") -> api.CompiledModel:
    """`path` compiled to `stage` with quantize{probability-scales=scales}: calibrated and
    quantized by the passes, then continued from the quantized IR (as esact-opt | esact-cc)."""
    return _continued(_quantized(path, calibration, scales), stage, sparsity=sparsity)


@functools.cache
def _quantized(path: Path, calibration: Path, scales: str) -> Path:
    compiled = api.compile(path, stage="transformer")
    for step in (make_pass("calibrate", compiled.store, calibration_data=str(calibration)),
                 make_pass("quantize", compiled.store, probability_scales=scales)):
        step.apply(make_context(), compiled.module)
    ir = path.parent / f"quantized_{scales}.mlir"
    compiled.save_ir(ir)
    return ir


def _continued(ir: Path, stage: str, **options) -> api.CompiledModel:
    """The quantized IR file compiled on to `stage` (the stages after `quantized`)."""
    loaded = api.load_ir(ir)
    continue_pipeline(loaded.module, loaded.store, loaded.stage, stage, CompileOptions(extra=options))
    return api.CompiledModel(loaded.module, loaded.store, stage)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_row_scales_keep_diffuse_rows_a_tensor_scale_zeroes(model) -> None:
    path, calibration, x = model
    fp32 = api.compile(path, stage="transformer").run({"x": x})["y"]
    row = _compiled(path, calibration, "quantized")
    tensor = _compiled(path, calibration, "quantized", "tensor")
    attention = [op for op in row.module.walk() if isinstance(op, AttentionOp)]
    assert len(attention) == 1 and attention[0].p_row_scales is not None
    assert attention[0].p_scale is None
    [tensor_op] = [op for op in tensor.module.walk() if isinstance(op, AttentionOp)]
    assert tensor_op.p_scale.value.data == pytest.approx(1 / 127)  # row 0's peak set it
    diffuse = slice(2, SEQ)
    got_row, got_tensor = row.run({"x": x})["y"], tensor.run({"x": x})["y"]
    assert relative_error(got_row[0, diffuse], fp32[0, diffuse]) < 0.01
    assert relative_error(got_tensor[0, diffuse], fp32[0, diffuse]) > 0.9  # rounded to 0
    assert relative_error(got_row, fp32) < 0.01


@pytest.mark.parametrize("sparsity", ["dense", "spls"])
def test_binary_matches_the_int8_reference(model, sparsity: str) -> None:
    path, calibration, x = model
    reference = _compiled(path, calibration, "sparsity", sparsity=sparsity)
    if sparsity == "spls":
        [attention] = [op for op in reference.module.walk() if isinstance(op, AttentionOp)]
        assert attention.rows is not None and attention.p_row_scales is not None
    binary = _compiled(path, calibration, "esb", sparsity=sparsity)
    result = binary.simulate({"x": x})
    np.testing.assert_array_equal(result.outputs["y"], reference.run({"x": x})["y"])
    program = binary.program()
    # P of each head's query tile is quantized per row and its output DEQUANT reads the scales
    p_quants = [i for i in program.instructions if i.opcode_name == "quant_rows"
                and i["cols"] == SEQ]
    assert p_quants and not [i for i in program.instructions
                             if i.opcode_name == "quant" and i["cols"] == SEQ]
    assert any(i.opcode_name == "dequant" and i["has_row_scale"] for i in program.instructions)


def test_the_sfu_is_charged_for_the_probability_row_scan(model) -> None:
    path, calibration, x = model
    busy = {scales: _compiled(path, calibration, "esb", scales).simulate({"x": x})
            .report["units"]["sfu"]["busy_cycles"] for scales in ("tensor", "row")}
    assert busy["row"] > busy["tensor"]


def test_row_scales_survive_an_ir_round_trip(model) -> None:
    path, calibration, x = model
    compiled = _compiled(path, calibration, "quantized")
    text = compiled.ir()
    assert " p_row_scales " in text and "p_scale(" not in text
    parsed = api.parse_ir(text)
    [attention] = [op for op in parsed.walk() if isinstance(op, AttentionOp)]
    assert attention.p_row_scales is not None and attention.int8_scales()[3] is None


def test_key_blocked_attention_with_row_scales_is_one_error(model, tmp_path: Path) -> None:
    """8 KiB of ABUF: not one query row over 512 keys fits, so the attention runs over key
    blocks, which see no row whole: an error naming the option, and `tensor` compiles."""
    path, calibration, x = model
    config = tmp_path / "abuf.toml"
    config.write_text("[sram]\nactivation_buffer = 8192\n")
    with pytest.raises(CompileError, match=r"attention over 512x512 does not fit the on-chip "
                                           r"buffers: its key blocks take one probability scale.*"
                                           r"--probability-scales tensor"):
        _continued(_quantized(path, calibration, "row"), "esb", hw=str(config))
    blocked = _continued(_quantized(path, calibration, "tensor"), "esb", hw=str(config))
    np.testing.assert_array_equal(blocked.simulate({"x": x}, hw=str(config)).outputs["y"],
                                  _compiled(path, calibration, "quantized", "tensor").run({"x": x})["y"])


def test_a_bad_value_is_one_error() -> None:
    with pytest.raises(CompileError, match="probability-scales must be one of row|tensor, got 'rows'"):
        make_pass("quantize", probability_scales="rows")


def test_the_compile_default_is_row_and_api_compile_takes_the_option(model) -> None:
    path, calibration, _ = model
    for options, row in (({}, True), ({"probability_scales": "tensor"}, False)):
        compiled = api.compile(path, stage="quantized", calibration_data=str(calibration), **options)
        [attention] = [op for op in compiled.module.walk() if isinstance(op, AttentionOp)]
        assert (attention.p_row_scales is not None) == row
        assert (attention.p_scale is None) == row
