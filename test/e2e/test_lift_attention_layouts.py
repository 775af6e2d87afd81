"""Attention written as 3-D batched MatMuls ([B*H, L, d] operands): BLOOM's layer (fused QKV
interleaved per head, ALiBi added to the 3-D scores, the factored tanh GELU) and DeBERTa's
(3-D scores and P V, a boolean padding mask) lift to one attention each and interpret like
onnxruntime; a content-dependent score term that is no disentangled position term (c2p / p2c,
test_disentangled_attention.py) is one near miss.

Graphs are built with onnx.helper in the shapes the exporters write (checked against exports of
BloomModel and DebertaV2Model, transformers 5, both exporters).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from esact_cc.dialects.transformer import AttentionOp, GeluOp, HostOp
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api

B, L, H, DH = 2, 6, 2, 4
D = H * DH


class _Graph:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...]) -> str:
        return self.const(f"w_{name}", (self.rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def op(self, kind: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def shape(self, name: str, *dims: int) -> str:
        return self.const(name, np.array(dims, np.int64))

    def model(self, inputs: list[onnx.ValueInfoProto], out: str) -> onnx.ModelProto:
        self.op("Identity", [out], "y")
        graph = helper.make_graph(self.nodes, "g", inputs,
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, L, D])],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def bloom_layer(layers: int = 1) -> onnx.ModelProto:
    """`layers` BLOOM blocks (without their layer norms) reading one ALiBi input."""
    g = _Graph()
    causal = np.triu(np.full((L, L), np.finfo(np.float32).min, np.float32), 1)[None, None]
    for name, value in (("s5", [B, L, H, 3, DH]), ("s3", [B * H, L, DH]), ("s4", [B, H, L, L]),
                        ("s_merge", [B, L, D])):
        g.shape(name, *value)
    for name, value in (("scale", np.float32(DH ** -0.5)), ("causal", causal),
                        ("c3", np.float32(0.044715)), ("one", np.float32(1.0)),
                        ("k", np.float32(0.79788456)), ("half", np.float32(0.5))):
        g.const(name, value)
    for i in range(3):
        g.const(f"i{i}", np.array(i, np.int64))
    h = "x"
    for n in range(layers):
        def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
            return g.op(kind, inputs, f"l{n}.{name}", **attrs)

        fused = op("Add", [op("MatMul", [h, g.weight(f"l{n}.qkv", (D, 3 * D))], "qkv_mm"),
                           g.weight(f"l{n}.qkv_b", (3 * D,))], "qkv")
        view = op("Reshape", [fused, "s5"], "view")
        parts = [op("Transpose", [op("Gather", [view, f"i{i}"], f"sel{i}", axis=3)], f"t{i}",
                    perm=[0, 2, 1, 3]) for i in range(3)]
        k3t = op("Transpose", [op("Reshape", [parts[1], "s3"], "k3")], "k3t", perm=[0, 2, 1])
        scores = op("Mul", [op("MatMul", [op("Reshape", [parts[0], "s3"], "q3"), k3t], "qk"),
                            "scale"], "scaled")
        scores = op("Reshape", [op("Add", [scores, "alibi"], "baddbmm"), "s4"], "scores4")
        probs = op("Softmax", [op("Add", [scores, "causal"], "masked")], "softmax", axis=-1)
        ctx = op("Transpose", [op("MatMul", [probs, parts[2]], "pv")], "ctx_t", perm=[0, 2, 1, 3])
        merged = op("Reshape", [ctx, "s_merge"], "merge")
        h = op("Add", [h, op("MatMul", [merged, g.weight(f"l{n}.dense", (D, D))], "dense")], "res")
        up = op("MatMul", [h, g.weight(f"l{n}.up", (D, 2 * D))], "up")
        inner = op("Add", [op("Mul", [op("Mul", [up, "c3"], "c3x"), up], "c3xx"), "one"], "one_plus")
        t = op("Tanh", [op("Mul", [op("Mul", [up, "k"], "kx"), inner], "arg")], "tanh")
        act = op("Mul", [op("Mul", [up, "half"], "half_x"), op("Add", [t, "one"], "tanh_plus")], "gelu")
        h = op("Add", [h, op("MatMul", [act, g.weight(f"l{n}.down", (2 * D, D))], "down")], "out")
    return g.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, L, D]),
                    helper.make_tensor_value_info("alibi", TensorProto.FLOAT, [B * H, 1, L])], h)


def deberta_layer(content_bias: bool = False) -> onnx.ModelProto:
    g = _Graph(1)
    heads = []
    for name in "qkv":
        proj = g.op("MatMul", ["x", g.weight(name, (D, D))], f"{name}_mm")
        split = g.op("Reshape", [proj, g.shape(f"split_{name}", B, L, H, DH)], f"{name}_split")
        heads.append(g.op("Reshape", [g.op("Transpose", [split], f"{name}_t", perm=[0, 2, 1, 3]),
                                      g.shape(f"flat_{name}", B * H, L, DH)], f"{name}3"))
    kt = g.op("Div", [g.op("Transpose", [heads[1]], "k3t", perm=[0, 2, 1]),
                      g.const("sqrt_d", np.float32(np.sqrt(DH)))], "k3t_scaled")
    scores = g.op("MatMul", [heads[0], kt], "qk")
    if content_bias:  # c2p: Q against (constant) relative position keys
        c2p = g.op("MatMul", [heads[0], g.weight("pos_key", (DH, L))], "c2p")
        scores = g.op("Add", [scores, c2p], "with_c2p")
    scores = g.op("Reshape", [scores, g.shape("s4", B, H, L, L)], "scores4")
    hidden = g.op("Not", [g.op("Cast", ["keep"], "keep_bool", to=TensorProto.BOOL)], "hidden")
    masked = g.op("Where", [hidden, g.const("min", np.float32(np.finfo(np.float32).min)), scores], "masked")
    probs = g.op("Reshape", [g.op("Softmax", [masked], "softmax", axis=-1), g.shape("s_p3", B * H, L, L)], "probs3")
    ctx = g.op("Reshape", [g.op("MatMul", [probs, heads[2]], "pv"), g.shape("s_ctx4", B, H, L, DH)], "ctx4")
    merged = g.op("Reshape", [g.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3]),
                              g.shape("s_merge", B, L, D)], "merged")
    out = g.op("Add", ["x", g.op("MatMul", [merged, g.weight("o", (D, D))], "o_mm")], "out")
    return g.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, L, D]),
                    helper.make_tensor_value_info("keep", TensorProto.INT64, [B, 1, 1, L])], out)


def _inputs(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((B, L, D)).astype(np.float32)}
    names = {i.name for i in model.graph.input}
    if "alibi" in names:  # slopes per head times key position, as BLOOM builds it
        slopes = np.array([0.5, 0.25], np.float32)[None, :, None, None]
        inputs["alibi"] = np.broadcast_to(slopes * np.arange(L, dtype=np.float32), (B, H, 1, L)) \
            .reshape(B * H, 1, L).astype(np.float32)
    if "keep" in names:
        keep = np.ones((B, 1, 1, L), np.int64)
        keep[1, ..., L - 2:] = 0
        inputs["keep"] = keep
    return inputs


@pytest.mark.parametrize("build", [bloom_layer, deberta_layer], ids=["bloom", "deberta"])
def test_3d_batched_attention_lifts_and_matches_onnxruntime(tmp_path, build) -> None:
    model = build()
    path = tmp_path / "layer.onnx"
    onnx.save(model, path)
    compiled = api.compile(path, stage="transformer")
    attention = [op for op in compiled.module.walk() if isinstance(op, AttentionOp)]
    assert len(attention) == 1 and attention[0].heads == H and attention[0].mask is not None
    outside = {op.name for op in compiled.module.walk()
               if op.name.startswith("onnx.") and not isinstance(op.parent_op(), HostOp)}
    assert not outside & {"onnx.MatMul", "onnx.Softmax", "onnx.Gather", "onnx.Tanh"}, outside
    if build is bloom_layer:  # the factored GELU and the three column-gathered projections
        assert sum(isinstance(op, GeluOp) for op in compiled.module.walk()) == 1
        assert sum(op.name == "transformer.linear" for op in compiled.module.walk()) == 6
    inputs = _inputs(model)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    got = compiled.run(inputs)["y"]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_bloom_layers_sharing_one_alibi_input_compile_and_run(tmp_path) -> None:
    """The ALiBi reshape to [B, H, 1, L] is made once for both layers (a host segment is an
    ONNX graph: two nodes of one name would be refused by onnxruntime)."""
    model = bloom_layer(layers=2)
    path = tmp_path / "bloom.onnx"
    onnx.save(model, path)
    inputs = _inputs(model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{k: np.stack([v] * 2) for k, v in inputs.items()})
    compiled = api.compile(path, stage="esb", calibration_data=str(calib))
    got = compiled.simulate(inputs).outputs["y"]
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    cosine = float(got.ravel() @ expected.ravel() / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine >= 0.99


def test_content_dependent_score_term_is_one_precise_near_miss(tmp_path, capsys) -> None:
    path = tmp_path / "layer.onnx"
    onnx.save(deberta_layer(content_bias=True), path)
    compiled = api.compile(path, stage="transformer", debug_lift=True)
    assert not any(isinstance(op, AttentionOp) for op in compiled.module.walk())
    lines = [line for line in capsys.readouterr().err.splitlines() if "attention at" in line]
    # A product without the gather by relative position is no disentangled term either.
    assert lines == ["lift-transformer: near miss: attention at 'softmax': the scores add a term "
                     "computed from activations by c2p that is not a disentangled position term "
                     "(a GatherElements of a MatMul by a constant position table): it passes "
                     "through onnx.MatMul (c2p)"]
