"""A post-LN BERT-like layer written directly in the transformer dialect, with its weights.

Shared by the back-end tests (loaded by file path: test directories are not packages), so they
do not depend on the frontend or lift-transformer. `build()` returns (module, store);
`inputs()` a matching input dict. The host region adds position embeddings (an ONNX Add).
`mask` is "row" (additive [1, 1, 1, L] padding mask), "full" (a per-query [1, 1, L, L] mask)
or "none"; `causal` adds the causal rule.
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from esact_cc.dialect_registry import make_context
from esact_cc.weight_store import WeightStore


def build(
    L: int = 16, D: int = 32, H: int = 4, F: int = 64, seed: int = 0, causal: bool = False,
    gelu: str = "none", mask: str = "row",
) -> tuple[ModuleOp, WeightStore]:
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def lin(name: str, i: int, o: int) -> None:
        w[name + ".w"] = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
        w[name + ".b"] = (0.1 * rng.standard_normal(o)).astype(np.float32)

    for n in ("q", "k", "v", "o"):
        lin(n, D, D)
    lin("f1", D, F)
    lin("f2", F, D)
    for n in ("ln1", "ln2"):
        w[n + ".g"] = (1 + 0.1 * rng.standard_normal(D)).astype(np.float32)
        w[n + ".b"] = (0.1 * rng.standard_normal(D)).astype(np.float32)
    w["pos"] = rng.standard_normal((1, L, D)).astype(np.float32)
    T, Tf = f"tensor<1x{L}x{D}xf32>", f"tensor<1x{L}x{F}xf32>"
    mask_type = {"row": f"tensor<1x1x1x{L}xf32>", "full": f"tensor<1x1x{L}x{L}xf32>"}.get(mask)
    mask_arg = f', %mask: {mask_type} {{onnx.name = "mask"}}' if mask_type else ""
    mask_use = " mask %mask" if mask_type else ""
    mask_types = f", {mask_type}" if mask_type else ""
    causal_kw = " causal" if causal else ""

    def handle(name: str, shape: str) -> str:
        return f'    %{name.replace(".", "_")} = onnx.weight "{name}" : tensor<{shape}xf32>\n'

    handles = "".join(
        handle(f"{n}.w", f"{D}x{D}") + handle(f"{n}.b", f"{D}") for n in ("q", "k", "v", "o")
    ) + handle("f1.w", f"{D}x{F}") + handle("f1.b", f"{F}") + handle("f2.w", f"{F}x{D}") + handle(
        "f2.b", f"{D}"
    ) + "".join(handle(f"{n}.{p}", f"{D}") for n in ("ln1", "ln2") for p in ("g", "b"))
    lin_t = f"({T}, tensor<{D}x{D}xf32>, tensor<{D}xf32>) -> {T}"
    src = f'''
builtin.module {{
  func.func @main(%x: {T} {{onnx.name = "x"}}{mask_arg}) -> ({T} {{onnx.name = "y"}}) {{
    %h = transformer.host(%x) : ({T}) -> {T} {{
    ^bb0(%a: {T}):
      %p = onnx.weight "pos" : tensor<1x{L}x{D}xf32>
      %s = onnx.Add %a, %p : ({T}, {T}) -> {T}
      transformer.yield %s : {T}
    }} loc("/embeddings/Add")
{handles}
    %q = transformer.linear %h, %q_w, %q_b : {lin_t} loc("/layer.0/attention/self/query/MatMul")
    %k = transformer.linear %h, %k_w, %k_b : {lin_t} loc("/layer.0/attention/self/key/MatMul")
    %v = transformer.linear %h, %v_w, %v_b : {lin_t} loc("/layer.0/attention/self/value/MatMul")
    %a = transformer.attention %q, %k, %v{mask_use} heads({H}) scale({1 / np.sqrt(D // H)}){causal_kw} : ({T}, {T}, {T}{mask_types}) -> {T} loc("/layer.0/attention/self/Softmax")
    %o = transformer.linear %a, %o_w, %o_b : {lin_t} loc("/layer.0/attention/output/dense/MatMul")
    %r1 = transformer.add %o, %h : ({T}, {T}) -> {T} loc("/layer.0/attention/output/Add")
    %l1 = transformer.layer_norm %r1, %ln1_g, %ln1_b eps(1.0e-12) : ({T}, tensor<{D}xf32>, tensor<{D}xf32>) -> {T} loc("/layer.0/attention/output/LayerNorm")
    %f1 = transformer.linear %l1, %f1_w, %f1_b : ({T}, tensor<{D}x{F}xf32>, tensor<{F}xf32>) -> {Tf} loc("/layer.0/intermediate/dense/MatMul")
    %g = transformer.gelu %f1 approximate("{gelu}") : ({Tf}) -> {Tf} loc("/layer.0/intermediate/Gelu")
    %f2 = transformer.linear %g, %f2_w, %f2_b : ({Tf}, tensor<{F}x{D}xf32>, tensor<{D}xf32>) -> {T} loc("/layer.0/output/dense/MatMul")
    %r2 = transformer.add %f2, %l1 : ({T}, {T}) -> {T} loc("/layer.0/output/Add")
    %l2 = transformer.layer_norm %r2, %ln2_g, %ln2_b eps(1.0e-12) : ({T}, tensor<{D}xf32>, tensor<{D}xf32>) -> {T} loc("/layer.0/output/LayerNorm")
    func.return %l2 : {T}
  }}
}}'''
    module = Parser(make_context(), src).parse_module()
    module.verify()
    store = WeightStore(w)
    return module, store


def inputs(L: int = 16, D: int = 32, seed: int = 1, mask: str = "row") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = {"x": rng.standard_normal((1, L, D)).astype(np.float32)}
    if mask == "row":
        m = np.zeros((1, 1, 1, L), np.float32)
        m[..., -3:] = -10000.0
        values["mask"] = m
    elif mask == "full":
        values["mask"] = np.where(rng.random((1, 1, L, L)) < 0.2, -10000.0, 0.0).astype(np.float32)
    return values
