"""A small ViT at a static batch B, built with onnx.helper in the shape the digits ViT's
legacy export has (scripts/train_digits_vit.py): a Conv patch stem, the CLS token Expanded to
the batch and Concatenated, a learned position Add, pre-LN blocks with eager attention and an
erf GELU FFN, a final LayerNormalization, the CLS row Gathered and a Gemm head. The weights
depend on `seed` only, so models of different batches compute the same function."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx_graph_builder import GraphBuilder


def vit_model(batch: int, layers: int = 2, hidden: int = 32, heads: int = 4, ffn: int = 64,
              image: int = 8, patch: int = 2, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    gb = GraphBuilder(hidden, np.random.default_rng(seed))
    init, weight, node, linear, layer_norm = gb.init, gb.weight, gb.node, gb.linear, gb.layer_norm
    tokens, d = (image // patch) ** 2 + 1, hidden // heads
    init("patch_shape", np.array([batch, hidden, tokens - 1], np.int64))
    init("cls_shape", np.array([batch, 1, hidden], np.int64))
    init("split_shape", np.array([batch, tokens, heads, d], np.int64))
    init("merge_shape", np.array([batch, tokens, hidden], np.int64))
    init("sqrt_d", np.array(np.sqrt(d), np.float32))
    init("cls_index", np.array(0, np.int64))
    x = node("Conv", ["pixel_values", weight("patch.weight", (hidden, 1, patch, patch), 0.5),
                      weight("patch.bias", (hidden,), 0.1)], "/patch/Conv",
             kernel_shape=[patch, patch], strides=[patch, patch])
    x = node("Transpose", [node("Reshape", [x, "patch_shape"], "/Reshape")], "/Transpose",
             perm=[0, 2, 1])
    cls = node("Expand", [weight("cls", (1, 1, hidden), 0.5), "cls_shape"], "/Expand")
    x = node("Add", [node("Concat", [cls, x], "/Concat", axis=1),
                     weight("pos", (1, tokens, hidden), 0.3)], "/Add")
    for n in range(layers):
        p = f"/blocks.{n}"
        h = layer_norm(x, f"{p}/ln1")
        heads_of = gb.heads(h, f"{p}/attn", "split_shape")
        s = node("MatMul", [heads_of["query"], heads_of["key"]], f"{p}/attn/MatMul")
        s = node("Softmax", [node("Div", [s, "sqrt_d"], f"{p}/attn/Div")], f"{p}/attn/Softmax",
                 axis=-1)
        c = node("MatMul", [s, heads_of["value"]], f"{p}/attn/MatMul_1")
        c = node("Reshape", [node("Transpose", [c], f"{p}/attn/Transpose", perm=[0, 2, 1, 3]),
                             "merge_shape"], f"{p}/attn/Reshape")
        x = node("Add", [x, linear(c, f"{p}/attn/out", hidden, hidden)], f"{p}/Add")
        f = linear(layer_norm(x, f"{p}/ln2"), f"{p}/fc1", hidden, ffn)
        init(f"{p}/sqrt2", np.array(np.sqrt(2.0), np.float32))
        init(f"{p}/one", np.array(1.0, np.float32))
        init(f"{p}/half", np.array(0.5, np.float32))
        erf = node("Erf", [node("Div", [f, f"{p}/sqrt2"], f"{p}/act/Div")], f"{p}/act/Erf")
        g = node("Mul", [node("Mul", [f, node("Add", [erf, f"{p}/one"], f"{p}/act/Add")],
                              f"{p}/act/Mul"), f"{p}/half"], f"{p}/act/Mul_1")
        x = node("Add", [x, linear(g, f"{p}/fc2", ffn, hidden)], f"{p}/Add_1")
    x = node("Gather", [layer_norm(x, "/norm"), "cls_index"], "/Gather", axis=1)
    gb.nodes.append(helper.make_node(
        "Gemm", [x, weight("head.weight", (classes, hidden)), weight("head.bias", (classes,), 0.1)],
        ["logits"], name="/head/Gemm", transB=1))
    graph = helper.make_graph(
        gb.nodes, "vit", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                                     [batch, 1, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], gb.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
