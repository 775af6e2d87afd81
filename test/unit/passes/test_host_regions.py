"""Host grouping after lift-transformer: maximal connected host regions, never a cycle through
the accelerator, constants cloned in, and the grouped function computes the same values."""

from __future__ import annotations

import numpy as np
from esact_cc.dialects.transformer import HostOp
from esact_cc.passes.host_regions import _UnionFind, group_host_regions
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.weight_store import WeightStore

T = "tensor<2x4xf32>"


def _parse(body: str) -> ModuleOp:
    text = f"""
    func.func @main(%x: {T}, %y: {T}) -> ({T}, {T}) {{
    {body}
    }}"""
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module


def _main(module: ModuleOp) -> func.FuncOp:
    return next(op for op in module.walk() if isinstance(op, func.FuncOp))


def _run(module: ModuleOp, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    return list(run_module(module, {"arg0": x, "arg1": y}, WeightStore()).values())


def test_path_through_the_accelerator_splits_regions() -> None:
    # a (host) -> gelu (accelerator) -> b (host), and a -> b directly: a and b are connected,
    # but one region holding both would need its own output: they must be two regions.
    body = f"""
      %a = onnx.Neg %x : ({T}) -> {T}
      %g = transformer.gelu %a approximate("none") : ({T}) -> {T}
      %b = onnx.Add %a, %g : ({T}, {T}) -> {T}
      %c = onnx.Mul %y, %y : ({T}, {T}) -> {T}
      func.return %b, %c : {T}, {T}
    """
    x, y = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4), np.ones((2, 4), np.float32)
    module = _parse(body)
    before = _run(module, x, y)
    regions = group_host_regions(_main(module))
    module.verify()
    assert len(regions) == 3  # {Neg}, {Add}, {Mul}: Neg and Mul are not connected
    for region in regions:
        assert all(
            not op.name.startswith("transformer.") or op.name == "transformer.yield"
            for op in region.body.block.ops
        )
    after = _run(module, x, y)
    for want, got in zip(before, after, strict=True):
        np.testing.assert_array_equal(got, want)


def test_connected_host_ops_form_one_region_with_constants_cloned_in() -> None:
    body = f"""
      %c = onnx.Constant {{value = dense<2.0> : tensor<f32>}} : () -> tensor<f32>
      %a = onnx.Mul %x, %c : ({T}, tensor<f32>) -> {T}
      %b = onnx.Add %a, %y : ({T}, {T}) -> {T}
      %s = transformer.softmax %b : ({T}) -> {T}
      %d = onnx.Sub %b, %c : ({T}, tensor<f32>) -> {T}
      func.return %s, %d : {T}, {T}
    """
    module = _parse(body)
    x, y = np.arange(8, dtype=np.float32).reshape(2, 4), np.full((2, 4), 0.5, np.float32)
    before = _run(module, x, y)
    regions = group_host_regions(_main(module))
    module.verify()
    assert len(regions) == 1
    (region,) = regions
    names = [op.name for op in region.body.block.ops]
    assert names == ["onnx.Constant", "onnx.Mul", "onnx.Add", "onnx.Sub", "transformer.yield"]
    assert len(region.outputs) == 2  # %b for the softmax, %d for the return
    assert not [op for op in _main(module).body.block.ops if op.name == "onnx.Constant"]
    after = _run(module, x, y)
    for want, got in zip(before, after, strict=True):
        np.testing.assert_array_equal(got, want)


def test_every_region_is_isolated_and_ordered_before_its_users() -> None:
    body = f"""
      %a = onnx.Neg %x : ({T}) -> {T}
      %s = transformer.softmax %a : ({T}) -> {T}
      %t = transformer.add %s, %y : ({T}, {T}) -> {T}
      %b = onnx.Abs %t : ({T}) -> {T}
      %u = transformer.add %b, %s : ({T}, {T}) -> {T}
      func.return %u, %b : {T}, {T}
    """
    module = _parse(body)
    group_host_regions(_main(module))
    module.verify()  # IsolatedFromAbove + dominance
    top = [op.name for op in _main(module).body.block.ops]
    assert top == [
        "transformer.host",
        "transformer.softmax",
        "transformer.add",
        "transformer.host",
        "transformer.add",
        "func.return",
    ]
    assert all(
        isinstance(op, HostOp)
        for op in _main(module).body.block.ops
        if op.name == "transformer.host"
    )


def test_regions_have_the_known_membership() -> None:
    # Stages: Neg, Abs, Mul, Sigmoid, Exp, Div 0; softmax 1; Relu, Add, Sub 2. Mul feeds Sub
    # across stages (two regions); Div joins two sets that were separate until then.
    body = f"""
      %a = onnx.Neg %x : ({T}) -> {T}
      %b = onnx.Abs %a : ({T}) -> {T}
      %s = transformer.softmax %b : ({T}) -> {T}
      %c = onnx.Relu %s : ({T}) -> {T}
      %d = onnx.Add %c, %b : ({T}, {T}) -> {T}
      %e = onnx.Mul %y, %y : ({T}, {T}) -> {T}
      %f = onnx.Sub %e, %d : ({T}, {T}) -> {T}
      %p = onnx.Sigmoid %y : ({T}) -> {T}
      %q = onnx.Exp %x : ({T}) -> {T}
      %r = onnx.Div %p, %q : ({T}, {T}) -> {T}
      func.return %f, %r : {T}, {T}
    """
    module = _parse(body)
    x, y = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4), np.full((2, 4), 0.5, np.float32)
    before = _run(module, x, y)
    regions = group_host_regions(_main(module))
    module.verify()
    members = [
        [op.name for op in region.body.block.ops if op.name != "transformer.yield"]
        for region in regions
    ]
    assert members == [
        ["onnx.Neg", "onnx.Abs"],
        ["onnx.Relu", "onnx.Add", "onnx.Sub"],
        ["onnx.Mul"],
        ["onnx.Sigmoid", "onnx.Exp", "onnx.Div"],
    ]
    after = _run(module, x, y)
    for want, got in zip(before, after, strict=True):
        np.testing.assert_array_equal(got, want)


def test_union_find_stays_shallow_on_a_long_chain() -> None:
    # Chains are the worst case of naive union (a path as long as the chain, quadratic finds):
    # by size, no tree is deeper than log2(n); a find points every op on its path at the root.
    ops = [object() for _ in range(4096)]
    groups = _UnionFind()
    for earlier, later in zip(ops, ops[1:]):
        groups.union(earlier, later)

    def depth(op: object) -> int:
        steps = 0
        while groups.parent[op] is not op:
            op, steps = groups.parent[op], steps + 1
        return steps

    assert max(depth(op) for op in ops) <= 12
    root = groups.find(ops[0])
    assert all(groups.find(op) is root for op in ops)
    assert all(groups.parent[op] is root for op in ops)
    assert groups.size[root] == len(ops)
