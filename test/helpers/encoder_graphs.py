"""Small Transformer encoders built with onnx.helper, in the shape HF's legacy exporter writes.

Loaded by file path from the e2e tests (test directories are not packages).

`encoder()` builds embeddings (Gather + position Add + LayerNormalization, the host part), the
padding-mask preprocessing (Unsqueeze/Cast/Sub/Mul; with `expanded_mask` Expanded to
[1, 1, L, L]), then `layers` post-LN (BERT) or pre-LN (ViT) blocks: eager attention
(MatMul+Add projections, Reshape/Transpose head split, scaled QK^T, mask Add, Softmax, PV,
head merge), output dense, residual Add, LayerNormalization, FFN with erf-decomposed GELU (or
the tanh form). Node names follow HF's `/encoder/layer.N/...` so layers and components show
up in debug maps.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def encoder(
    layers: int = 2,
    seq: int = 16,
    hidden: int = 32,
    heads: int = 4,
    ffn: int = 64,
    vocab: int = 50,
    pre_ln: bool = False,
    gelu: str = "erf",
    seed: int = 0,
    opset: int = 17,
    expanded_mask: bool = False,
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    d = hidden // heads
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        scale = (1.0 / np.sqrt(shape[0])) if scale is None else scale
        return init(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    init("c_one", np.array(1.0, np.float32))
    init("c_neg", np.array(-10000.0, np.float32))
    init("c_sqrt_d", np.array(np.sqrt(d), np.float32))
    init("c_sqrt2", np.array(np.sqrt(2.0), np.float32))
    init("c_half", np.array(0.5, np.float32))
    init("c_axes12", np.array([1, 2], np.int64))
    init("c_split", np.array([1, seq, heads, d], np.int64))
    init("c_merge", np.array([1, seq, hidden], np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        g = init(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        b = init(f"{prefix}.bias", (0.1 * rng.standard_normal(hidden)).astype(np.float32))
        return node("LayerNormalization", [x, g, b], f"{prefix}/LayerNormalization", axis=-1, epsilon=1e-12)

    def linear(x: str, prefix: str, n_in: int, n_out: int) -> str:
        mm = node("MatMul", [x, weight(f"{prefix}.weight", (n_in, n_out))], f"{prefix}/MatMul")
        return node("Add", [mm, weight(f"{prefix}.bias", (n_out,), 0.1)], f"{prefix}/Add")

    def gelu_of(x: str, prefix: str) -> str:
        if gelu == "erf":
            div = node("Div", [x, "c_sqrt2"], f"{prefix}/Div")
            erf = node("Erf", [div], f"{prefix}/Erf")
            add = node("Add", [erf, "c_one"], f"{prefix}/Add")
            mul = node("Mul", [x, add], f"{prefix}/Mul")
            return node("Mul", [mul, "c_half"], f"{prefix}/Mul_1")
        return node("Gelu", [x], f"{prefix}/Gelu", approximate="tanh", domain="") if opset >= 20 else _tanh_gelu(x, prefix)

    def _tanh_gelu(x: str, prefix: str) -> str:
        init(f"{prefix}.c3", np.array(0.044715, np.float32))
        init(f"{prefix}.k", np.array(np.sqrt(2.0 / np.pi), np.float32))
        init(f"{prefix}.three", np.array(3.0, np.float32))
        cube = node("Pow", [x, f"{prefix}.three"], f"{prefix}/Pow")
        inner = node("Add", [x, node("Mul", [cube, f"{prefix}.c3"], f"{prefix}/Mul")], f"{prefix}/Add")
        th = node("Tanh", [node("Mul", [inner, f"{prefix}.k"], f"{prefix}/Mul_1")], f"{prefix}/Tanh")
        one = node("Add", [th, "c_one"], f"{prefix}/Add_1")
        return node("Mul", [node("Mul", [x, "c_half"], f"{prefix}/Mul_2"), one], f"{prefix}/Mul_3")

    # Embeddings and mask (host).
    tok = node("Gather", [weight("embeddings.word", (vocab, hidden), 1.0), "input_ids"], "/embeddings/Gather", axis=0)
    pos = node("Add", [tok, weight("embeddings.position", (1, seq, hidden), 0.5)], "/embeddings/Add")
    x = layer_norm(pos, "/embeddings/LayerNorm")
    m = node("Unsqueeze", ["attention_mask", "c_axes12"], "/mask/Unsqueeze")
    m = node("Cast", [m], "/mask/Cast", to=TensorProto.FLOAT)
    m = node("Sub", ["c_one", m], "/mask/Sub")
    mask = node("Mul", [m, "c_neg"], "/mask/Mul")
    if expanded_mask:  # per query, [1, 1, L, L], as transformers' BERT export writes it
        mask = node("Expand", [mask, init("c_expand", np.array([1, 1, seq, seq], np.int64))],
                    "/mask/Expand")

    for i in range(layers):
        p = f"/encoder/layer.{i}"
        h = layer_norm(x, f"{p}/attention/LayerNorm_pre") if pre_ln else x
        split = {}
        for name in ("query", "key", "value"):
            lin = linear(h, f"{p}/attention/self/{name}", hidden, hidden)
            r = node("Reshape", [lin, "c_split"], f"{p}/attention/self/{name}/Reshape")
            perm = [0, 2, 3, 1] if name == "key" else [0, 2, 1, 3]
            split[name] = node("Transpose", [r], f"{p}/attention/self/{name}/Transpose", perm=perm)
        s = node("MatMul", [split["query"], split["key"]], f"{p}/attention/self/MatMul")
        s = node("Div", [s, "c_sqrt_d"], f"{p}/attention/self/Div")
        s = node("Add", [s, mask], f"{p}/attention/self/Add")
        s = node("Softmax", [s], f"{p}/attention/self/Softmax", axis=-1)
        c = node("MatMul", [s, split["value"]], f"{p}/attention/self/MatMul_1")
        c = node("Transpose", [c], f"{p}/attention/self/Transpose", perm=[0, 2, 1, 3])
        c = node("Reshape", [c, "c_merge"], f"{p}/attention/self/Reshape")
        o = linear(c, f"{p}/attention/output/dense", hidden, hidden)
        if pre_ln:
            x = node("Add", [o, x], f"{p}/attention/output/Add")
            h = layer_norm(x, f"{p}/output/LayerNorm_pre")
        else:
            x = layer_norm(node("Add", [o, x], f"{p}/attention/output/Add"), f"{p}/attention/output/LayerNorm")
            h = x
        f = gelu_of(linear(h, f"{p}/intermediate/dense", hidden, ffn), f"{p}/intermediate/gelu")
        f = linear(f, f"{p}/output/dense", ffn, hidden)
        x = node("Add", [f, x], f"{p}/output/Add")
        if not pre_ln:
            x = layer_norm(x, f"{p}/output/LayerNorm")
    if pre_ln:
        x = layer_norm(x, "/final/LayerNorm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="/output/Identity"))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, seq]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def encoder_inputs(seq: int = 16, vocab: int = 50, padding: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((1, seq), np.int64)
    if padding:
        mask[:, -padding:] = 0
    return {"input_ids": rng.integers(0, vocab, (1, seq)).astype(np.int64), "attention_mask": mask}
