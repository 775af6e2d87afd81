"""Small ONNX graphs built with onnx.helper, shared by the onnx frontend/interpreter tests.

Loaded by file path (test directories are not packages): `load_graphs()` in each test file.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def attention_block(seq: int | str = "seq", width: int = 16, heads: int = 2, opset: int = 17,
                    seed: int = 0) -> onnx.ModelProto:
    """A BERT-style encoder attention block as the legacy exporter writes it.

    The head split reshapes take their shape from Shape/Gather/Unsqueeze/Concat subgraphs on
    the dynamic sequence length; the padding mask is Unsqueeze/Cast/Sub/Mul of an int mask.
    """
    rng = np.random.default_rng(seed)
    d = width // heads
    inits = []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name))
        return name

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes = []

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"/attn/{output}", **attrs))
        return output

    const("zero", np.array(0, np.int64))
    const("one_i", np.array(1, np.int64))
    const("ax0", np.array([0], np.int64))
    const("heads_d", np.array([heads, d], np.int64))
    const("minus1", np.array([-1], np.int64))
    const("one_f", np.array(1.0, np.float32))
    const("neg_big", np.array(-10000.0, np.float32))
    const("sqrt_d", np.array(np.sqrt(d), np.float32))
    # Dynamic-style shape computation: [batch, seq, heads, d] from Shape(x).
    node("Shape", ["x"], "shape_x")
    node("Gather", ["shape_x", "zero"], "batch", axis=0)
    node("Gather", ["shape_x", "one_i"], "len", axis=0)
    node("Unsqueeze", ["batch", "ax0"], "batch_1")
    node("Unsqueeze", ["len", "ax0"], "len_1")
    node("Concat", ["batch_1", "len_1", "heads_d"], "split_shape", axis=0)
    node("Concat", ["batch_1", "len_1", "minus1"], "merge_shape", axis=0)
    heads_out = {}
    for p in ("q", "k", "v"):
        node("MatMul", ["x", weight(f"w_{p}", (width, width))], f"{p}_mm")
        node("Add", [f"{p}_mm", weight(f"b_{p}", (width,))], f"{p}_lin")
        node("Reshape", [f"{p}_lin", "split_shape"], f"{p}_split")
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]
        heads_out[p] = node("Transpose", [f"{p}_split"], f"{p}_heads", perm=perm)
    node("MatMul", [heads_out["q"], heads_out["k"]], "scores")
    node("Div", ["scores", "sqrt_d"], "scaled")
    node("Unsqueeze", ["mask", "ax0"], "mask_u1")  # [1, 1, L]
    node("Unsqueeze", ["mask_u1", "ax0"], "mask_u2")  # [1, 1, 1, L]
    node("Cast", ["mask_u2"], "mask_f", to=TensorProto.FLOAT)
    node("Sub", ["one_f", "mask_f"], "mask_inv")
    node("Mul", ["mask_inv", "neg_big"], "mask_add")
    node("Add", ["scaled", "mask_add"], "masked")
    node("Softmax", ["masked"], "probs", axis=-1)
    node("MatMul", ["probs", heads_out["v"]], "context")
    node("Transpose", ["context"], "context_t", perm=[0, 2, 1, 3])
    node("Reshape", ["context_t", "merge_shape"], "merged")
    node("MatMul", ["merged", weight("w_o", (width, width))], "o_mm")
    node("Add", ["o_mm", weight("b_o", (width,))], "o_lin")
    node("Add", ["o_lin", "x"], "residual")
    node("LayerNormalization", ["residual", weight("ln_g", (width,)), weight("ln_b", (width,))], "y",
         axis=-1, epsilon=1e-12)
    graph = helper.make_graph(
        nodes, "attention_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, width]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def attention_inputs(seq: int, width: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((1, seq), np.int64)
    mask[0, seq - 2:] = 0
    return {"x": rng.standard_normal((1, seq, width)).astype(np.float32), "mask": mask}


def single_node(op: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, opset: int = 18,
                constant_inputs: dict[str, np.ndarray] | None = None, **attrs) -> onnx.ModelProto:
    """A model with one node; `inputs` are graph inputs, `constant_inputs` initializers,
    both in the node's input order (inputs first). Output shapes are left to inference."""
    constant_inputs = constant_inputs or {}
    names = list(inputs) + list(constant_inputs)
    outputs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outputs, name=f"/{op}", **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(v, n) for n, v in constant_inputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=8 if opset <= 18 else 9)
    # onnxruntime wants typed outputs: take them from shape inference.
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    types = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for output in model.graph.output:
        output.CopyFrom(types[output.name])
    return model
