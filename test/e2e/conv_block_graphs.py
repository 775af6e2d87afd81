"""A model whose pre- and post-processing are ops without numpy semantics in esact-cc.

`conv_block_model()`: a 1-D Conv stem ([B, channels, 2L] -> [B, hidden, L], the Whisper
encoder's kind), one pre-LN Transformer encoder block (attention, ReLU FFN), then a decoder
of Resize (nearest, x2) and a 1-D ConvTranspose (x2). Loaded by file path from the e2e tests.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx_graph_builder import GraphBuilder  # test/helpers, on sys.path by test/conftest.py


def conv_block_model(seq: int = 16, hidden: int = 32, heads: int = 4, ffn: int = 64,
                     channels: int = 4, seed: int = 0, opset: int = 17,
                     batch: int = 1, softmax_axis: int = -1,
                     scale_from_input: bool = False) -> onnx.ModelProto:
    """`softmax_axis` other than -1 (over queries, not keys) is not an attention the lift
    recognises: the block's attention then stays on the host. `scale_from_input` divides the
    scores by a value computed from the input (not a constant): the attention is not lifted,
    its softmax is, on its own."""
    gb = GraphBuilder(hidden, np.random.default_rng(seed))
    init, weight, node, linear, layer_norm = gb.init, gb.weight, gb.node, gb.linear, gb.layer_norm
    d = hidden // heads
    init("split_shape", np.array([batch, seq, heads, d], np.int64))
    init("merge_shape", np.array([batch, seq, hidden], np.int64))
    init("sqrt_d", np.array(np.sqrt(d), np.float32))
    init("resize_scales", np.array([1.0, 1.0, 2.0], np.float32))
    x = node("Conv", ["audio", weight("stem.weight", (hidden, channels, 3), 0.3),
                      weight("stem.bias", (hidden,), 0.1)], "/stem/Conv",
             kernel_shape=[3], strides=[2], pads=[1, 1])
    x = node("Transpose", [x], "/stem/Transpose", perm=[0, 2, 1])
    h = layer_norm(x, "/block/ln1")
    heads_of = gb.heads(h, "/block", "split_shape")
    s = node("MatMul", [heads_of["query"], heads_of["key"]], "/block/scores/MatMul")
    scale = "sqrt_d"
    if scale_from_input:  # sqrt_d + 0 * mean(audio): the same value, but not a constant
        init("zero", np.array(0.0, np.float32))
        mean = node("ReduceMean", ["audio"], "/block/scale/ReduceMean", keepdims=0)
        scale = node("Add", ["sqrt_d", node("Mul", [mean, "zero"], "/block/scale/Mul")],
                     "/block/scale/Add")
    s = node("Softmax", [node("Div", [s, scale], "/block/scores/Div")], "/block/Softmax",
             axis=softmax_axis)
    c = node("MatMul", [s, heads_of["value"]], "/block/context/MatMul")
    c = node("Reshape", [node("Transpose", [c], "/block/context/Transpose", perm=[0, 2, 1, 3]),
                         "merge_shape"], "/block/context/Reshape")
    x = node("Add", [linear(c, "/block/out", hidden, hidden), x], "/block/residual1")
    f = node("Relu", [linear(layer_norm(x, "/block/ln2"), "/block/ffn1", hidden, ffn)],
             "/block/ffn/Relu")
    x = node("Add", [linear(f, "/block/ffn2", ffn, hidden), x], "/block/residual2")
    x = node("Transpose", [x], "/decoder/Transpose", perm=[0, 2, 1])
    x = node("Resize", [x, "", "resize_scales"], "/decoder/Resize", mode="nearest")
    gb.nodes.append(helper.make_node(
        "ConvTranspose", [x, weight("decoder.weight", (hidden, 2, 2), 0.3)], ["waveform"],
        name="/decoder/ConvTranspose", kernel_shape=[2], strides=[2]))
    graph = helper.make_graph(
        gb.nodes, "conv_block",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [batch, channels, 2 * seq])],
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [batch, 2, 4 * seq])],
        gb.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
