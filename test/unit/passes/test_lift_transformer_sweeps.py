"""lift-transformer's walks over the block: phases without an anchor present are skipped and
dead ops are swept only after a change, without changing what is removed; the garbage
collector is paused for the lift and restored after it."""

from __future__ import annotations

import gc

from esact_cc.passes.lift_transformer import lift_module
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from esact_cc.dialect_registry import make_context
from esact_cc.weight_store import WeightStore

T = "tensor<2x4xf32>"


def _module(body: str) -> ModuleOp:
    text = f"""
    func.func @main(%x: {T}) -> {T} {{
    {body}
    }}"""
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module


def _op_names(module: ModuleOp) -> list[str]:
    return [op.name for op in module.walk()]


def test_dead_ops_are_swept_when_nothing_is_lifted() -> None:
    # No phase has an anchor here (Neg, Abs): the one sweep at the start must still run.
    module = _module(f"""
      %dead = onnx.Abs %x : ({T}) -> {T}
      %a = onnx.Neg %x : ({T}) -> {T}
      func.return %a : {T}
    """)
    report = lift_module(module, WeightStore(), group_host=False)
    assert not report.lifted
    assert "onnx.Abs" not in _op_names(module)
    assert "onnx.Neg" in _op_names(module)


def test_ops_a_lift_leaves_dead_are_swept() -> None:
    # The Softmax phase runs late; the Neg only fed the Identity that phase 0 bypassed.
    module = _module(f"""
      %i = onnx.Identity %x : ({T}) -> {T}
      %s = onnx.Softmax %i {{axis = -1 : i64}} : ({T}) -> {T}
      func.return %s : {T}
    """)
    report = lift_module(module, WeightStore(), group_host=False)
    assert report.lifted["softmax"] == 1
    names = _op_names(module)
    assert "transformer.softmax" in names
    assert not [name for name in names if name.startswith("onnx.")]


def test_collector_state_is_restored() -> None:
    body = f"""
      %a = onnx.Neg %x : ({T}) -> {T}
      func.return %a : {T}
    """
    assert gc.isenabled()
    lift_module(_module(body), WeightStore())
    assert gc.isenabled()
    gc.disable()
    try:
        lift_module(_module(body), WeightStore())
        assert not gc.isenabled()
    finally:
        gc.enable()
