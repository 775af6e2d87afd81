"""A sentence-embedding tail (masked mean pooling + L2 normalisation, as all-MiniLM-L6-v2's)
left on the host after a lifted linear: the binary runs it on onnxruntime as one host segment,
and the INT8 reference interpreter must compute the same bits. numpy's ReduceL2 / ReduceSum
round differently from onnxruntime's (bench/results/scheme_comparison.md's MiniLM rows:
max |diff| 1.5e-8), so the interpreter runs a quantized function's host region on onnxruntime
too (esact_cc/interpreter/host_region_onnxruntime.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.runtime.esb import read_esb
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

TOKENS, WIDTH = 16, 96


def pooled_embedding_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array(
        (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32), "b")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    tiny = numpy_helper.from_array(np.array(1e-9, np.float32), "tiny")
    tinier = numpy_helper.from_array(np.array(1e-12, np.float32), "tinier")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["hidden"]),
        helper.make_node("Unsqueeze", ["attention_mask", "axis_last"], ["mask3"]),
        helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["hidden", "maskf"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis"], ["count"], keepdims=0),
        helper.make_node("Clip", ["count", "tiny", ""], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["pooled"]),
        helper.make_node("ReduceL2", ["pooled"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Clip", ["norm", "tinier", ""], ["norm_safe"]),
        helper.make_node("Div", ["pooled", "norm_safe"], ["embedding"]),
    ]
    axis_last = numpy_helper.from_array(np.array([-1], np.int64), "axis_last")
    graph = helper.make_graph(
        nodes, "pooled_embedding",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, WIDTH]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, TOKENS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, WIDTH])],
        [weight, bias, axis, axis_last, tiny, tinier])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
    mask = np.zeros((1, TOKENS), np.int64)
    mask[0, :rng.integers(3, TOKENS + 1)] = 1
    return {"x": rng.standard_normal((1, TOKENS, WIDTH)).astype(np.float32),
            "attention_mask": mask}


def test_host_pooling_and_normalisation_equal_the_int8_interpreter(tmp_path: Path) -> None:
    path = tmp_path / "pooled.onnx"
    onnx.save(pooled_embedding_model(), path)
    rng = np.random.default_rng(5)
    calibration = [_sample(rng) for _ in range(4)]
    calib_path = tmp_path / "calib.npz"
    np.savez(calib_path, **{k: np.concatenate([s[k] for s in calibration])
                            for k in calibration[0]})
    compiled = api.compile(path, stage="quantized", calibration_data=str(calib_path))
    assert any(op.name == "transformer.linear" for op in compiled.module.walk())
    esb = tmp_path / "pooled.esb"
    api.compile(path, stage="esb", calibration_data=str(calib_path)).save_esb(esb)
    program = read_esb(esb)
    segment_ops = {node.op_type for segment in program.host_segments
                   for node in onnx.ModelProto.FromString(segment.onnx).graph.node}
    assert {"ReduceSum", "ReduceL2"} <= segment_ops
    config = load_config()
    for sample in [_sample(rng) for _ in range(6)]:
        got = run_program(program, sample, config).outputs["embedding"]
        want = compiled.run(sample)["embedding"]
        np.testing.assert_array_equal(got, want)
