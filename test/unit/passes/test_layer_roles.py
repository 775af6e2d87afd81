"""Layers and roles come from the graph's structure (passes/layer_roles.py), never node names:
meaningless names give the same stamps and binary, a weight-shared layer applied twice is two
layers, a gated FFN gets gate/up/down roles, and `LAYER:` SPLS options address stamped layers."""

from __future__ import annotations

import encoder_graphs
from pathlib import Path

import onnx
import pytest
from onnx import helper, numpy_helper

from esact_cc import api
from esact_cc.dialects import spls, transformer
from esact_cc.passes.layer_roles import (LAYER_ATTR, Stamp, analyse, layers_and_roles,
                                         read_stamp)
from esact_cc.runtime.errors import CompileError

ROOT = Path(__file__).resolve().parents[3]
POST_LN_LAYER = ["q", "k", "v", "attention", "o", "residual", "norm", "ffn_up", "activation",
                 "ffn_down", "residual", "norm"]


def _renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every node named n0, n1, ... (initializers and values keep theirs)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    return model


def _weight_shared(model: onnx.ModelProto) -> onnx.ModelProto:
    """ALBERT's form: layer 1 applies layer 0's weights, and its nodes are named like layer 0's
    second application (`/encoder/layer.0/..._1`)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    shared = {i.name for i in graph.initializer if i.name.startswith("/encoder/layer.1/")}
    kept = [i for i in graph.initializer if i.name not in shared]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        node.input[:] = [n.replace("/encoder/layer.1/", "/encoder/layer.0/") if n in shared else n
                         for n in node.input]
        if node.name.startswith("/encoder/layer.1/"):
            node.name = node.name.replace("/encoder/layer.1/", "/encoder/layer.0/") + "_1"
    onnx.checker.check_model(model)
    return model


def _gated_ffn(model: onnx.ModelProto, hidden: int, ffn: int) -> onnx.ModelProto:
    """Layer 0's FFN made SwiGLU-like: down(silu(x W_gate) * (x W_up)) instead of
    down(gelu(x W_up))."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    p = "/encoder/layer.0"
    up_mm = next(n for n in graph.node if n.name == f"{p}/intermediate/dense/MatMul")
    up = next(n for n in graph.node if n.name == f"{p}/intermediate/dense/Add").output[0]
    down = next(n for n in graph.node if n.name == f"{p}/output/dense/MatMul")
    nodes = [n for n in graph.node if not n.name.startswith(f"{p}/intermediate/gelu/")]
    position = nodes.index(down)
    w = numpy_helper.to_array(next(i for i in graph.initializer if i.name == up_mm.input[1]))
    graph.initializer.extend([numpy_helper.from_array(w[:, ::-1].copy(), "gate.weight")])
    gate = [
        helper.make_node("MatMul", [up_mm.input[0], "gate.weight"], ["gate"], name="g0"),
        helper.make_node("Sigmoid", ["gate"], ["gate_sig"], name="g1"),
        helper.make_node("Mul", ["gate", "gate_sig"], ["silu"], name="g2"),
        helper.make_node("Mul", ["silu", up], ["product"], name="g3"),
    ]
    down.input[0] = "product"
    del graph.node[:]
    graph.node.extend(nodes[:position] + gate + nodes[position:])
    onnx.checker.check_model(model)
    assert w.shape == (hidden, ffn)
    return model


def _stamps(compiled: api.CompiledModel, kind: type | tuple[type, ...] | None = None) -> list[Stamp]:
    """The stamps of the lifted ops of @main, in program order (of `kind` if given)."""
    ops = [op for op in compiled.module.walk()
           if op.parent_op() is not None and op.parent_op().name == "func.func"]
    stamps = [(op, read_stamp(op)) for op in ops if kind is None or isinstance(op, kind)]
    return [s for _, s in stamps if s is not None]


def _layer_roles(compiled: api.CompiledModel) -> list[tuple[int, str]]:
    return [(s.layer, s.role) for s in _stamps(compiled) if s.role != "host"]


def _binary_without_names(compiled: api.CompiledModel):
    """What an .esb holds besides node and weight names: instructions, per-instruction layer
    and component, data bytes in order."""
    program = compiled.program()
    debug = [(i, e.layer, e.component) for i, e in sorted(program.debug.items())]
    return program.instructions, debug, [(d.address, d.data) for d in program.data_segments]


def test_post_ln_encoder_layers_and_roles() -> None:
    compiled = api.compile(encoder_graphs.encoder(layers=2), stage="transformer")
    assert _layer_roles(compiled) == [(-1, "norm")] + [(n, role) for n in (0, 1)
                                                       for role in POST_LN_LAYER]


def test_pre_ln_encoder_final_norm_is_outside_the_layers() -> None:
    compiled = api.compile(encoder_graphs.encoder(layers=2, pre_ln=True), stage="transformer")
    roles = _layer_roles(compiled)
    assert roles[0] == (-1, "norm")  # embeddings LayerNorm
    assert roles[1] == (0, "norm") and roles[-1] == (-1, "norm")  # pre-LN of layer 0; final LN
    assert [r for r in roles if r[1] == "attention"] == [(0, "attention"), (1, "attention")]
    assert [layer for layer, role in roles if role == "ffn_down"] == [0, 1]


def test_meaningless_node_names_give_the_same_stamps_and_binary() -> None:
    model = encoder_graphs.encoder(layers=2)
    named = api.compile(model, stage="esb")
    anonymous = api.compile(_renamed(model), stage="esb")
    assert _binary_without_names(anonymous) == _binary_without_names(named)
    layers = {e.layer for e in anonymous.program().debug.values()}
    assert layers == {-1, 0, 1}
    ir_named = api.compile(model, stage="transformer")
    ir_anonymous = api.compile(_renamed(model), stage="transformer")
    assert _layer_roles(ir_anonymous) == _layer_roles(ir_named)


def test_weight_shared_layer_applied_twice_is_two_layers() -> None:
    model = _weight_shared(encoder_graphs.encoder(layers=2))
    compiled = api.compile(model, stage="esb")
    program = compiled.program()
    attention = [e for e in program.debug.values() if e.component == "qk"]
    assert {e.layer for e in attention} == {0, 1}
    assert all(e.node.startswith("/encoder/layer.0/") for e in attention)  # one name, two layers
    second = {e.component for e in program.debug.values() if e.layer == 1}
    assert {"q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2"} <= second


def test_gated_ffn_gets_gate_up_and_down_roles() -> None:
    compiled = api.compile(_gated_ffn(encoder_graphs.encoder(layers=1), 32, 64),
                           stage="transformer")
    linears = [(s.layer, s.role) for s in _stamps(compiled, transformer.LinearOp)]
    # In program order: the up projection (the encoder's own), then the gate the test added.
    assert linears == [(0, "q"), (0, "k"), (0, "v"), (0, "o"), (0, "ffn_up"), (0, "ffn_gate"),
                       (0, "ffn_down")]


def test_gated_ffn_roles_from_ir_without_stamps() -> None:
    """Hand-written IR: the same analysis, through an elementwise op the IR leaves to the host."""
    text = _GATED_IR
    module = api.parse_ir(text)
    function = next(op for op in module.walk() if op.name == "func.func")
    stamps = analyse(function.body.block)
    by_name = {op.results[0].name_hint: s for op, s in stamps.items() if op.results}
    assert by_name["gate"] == Stamp(0, "ffn_gate")
    assert by_name["up"] == Stamp(0, "ffn_up")
    assert by_name["down"] == Stamp(0, "ffn_down")
    assert by_name["o"] == Stamp(0, "o") and by_name["q"] == Stamp(0, "q")
    assert by_name["head"] == Stamp(-1, "head")
    assert not any(LAYER_ATTR in op.attributes for op in stamps)  # derived, not written


def test_stamps_print_parse_and_survive_quantize_and_insert_spls(tmp_path: Path) -> None:
    model = _renamed(encoder_graphs.encoder(layers=2))
    lifted = api.compile(model, stage="transformer")
    text = lifted.ir()
    assert 'role = "ffn_down"' in text and "layer = 1 : i64" in text
    reparsed = api.parse_ir(text)
    assert [s for s in (read_stamp(op) for op in reparsed.walk()) if s] == _stamps(lifted)
    sparse = api.compile(model, stage="spls", sparsity="spls")
    by_class = {(type(op).__name__, s.layer, s.role) for op in sparse.module.walk()
                if (s := read_stamp(op)) is not None}
    assert any(role == "predict" and layer == 1 for _, layer, role in by_class)
    assert {role for _, _, role in by_class} >= {"q", "k", "v", "o", "ffn_up", "ffn_down"}


def test_spls_layer_option_addresses_the_stamped_layer() -> None:
    model = _weight_shared(_renamed(encoder_graphs.encoder(layers=2)))
    compiled = api.compile(model, stage="spls", sparsity="spls",
                           spls_option=["threshold=0.99", "1:threshold=0.5"])
    thresholds = {read_stamp(op).layer: op.threshold.value.data
                  for op in compiled.module.walk() if isinstance(op, spls.LocalSimilarityOp)}
    assert thresholds == {0: pytest.approx(0.99), 1: pytest.approx(0.5)}


@pytest.mark.parametrize("stamp_text", ['{layer = 0 : i64, role = "bogus"}',
                                        '{layer = -2 : i64, role = "q"}', '{role = "q"}'])
def test_a_malformed_stamp_is_a_one_line_error(stamp_text: str) -> None:
    text = _GATED_IR.replace("%q = transformer.linear %h, %w :",
                             f"%q = transformer.linear %h, %w {stamp_text} :")
    function = next(op for op in api.parse_ir(text).walk() if op.name == "func.func")
    with pytest.raises(CompileError, match=r"^transformer\.linear: bad layer/role stamp .* role "
                                           r"one of q, k, v, o, ffn_up"):
        layers_and_roles(function)


_GATED_IR = """
builtin.module {
  func.func @main(%h: tensor<1x4x8xf32>) -> (tensor<1x4x3xf32>) {
    %w = onnx.weight "w" : tensor<8x8xf32>
    %wu = onnx.weight "wu" : tensor<8x16xf32>
    %wd = onnx.weight "wd" : tensor<16x8xf32>
    %wh = onnx.weight "wh" : tensor<8x3xf32>
    %q = transformer.linear %h, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
    %k = transformer.linear %h, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
    %v = transformer.linear %h, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
    %a = transformer.attention %q, %k, %v heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %o = transformer.linear %a, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
    %r = transformer.add %h, %o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %up = transformer.linear %r, %wu : (tensor<1x4x8xf32>, tensor<8x16xf32>) -> tensor<1x4x16xf32>
    %gate = transformer.linear %r, %wu : (tensor<1x4x8xf32>, tensor<8x16xf32>) -> tensor<1x4x16xf32>
    %act = transformer.gelu %gate approximate("none") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %product = transformer.host(%act, %up) : (tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    ^bb0(%x: tensor<1x4x16xf32>, %y: tensor<1x4x16xf32>):
      %p = onnx.Mul %x, %y : (tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
      transformer.yield %p : tensor<1x4x16xf32>
    }
    %down = transformer.linear %product, %wd : (tensor<1x4x16xf32>, tensor<16x8xf32>) -> tensor<1x4x8xf32>
    %r2 = transformer.add %r, %down : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %head = transformer.linear %r2, %wh : (tensor<1x4x8xf32>, tensor<8x3xf32>) -> tensor<1x4x3xf32>
    func.return %head : tensor<1x4x3xf32>
  }
}
"""
