"""Shared test fixture: one small pre-LN encoder layer in the `transformer` dialect (L = 6
tokens, width 8, 2 heads, FFN 16) with seeded weights and inputs, optionally with an additive
padding mask and/or causal attention. Used by the SPLS interpreter and sparse-lowering tests."""

import numpy as np
from esact_cc.api import parse_ir
from esact_cc.weight_store import WeightStore

L, D, F = 6, 8, 16
LAYER_IR = """
builtin.module {
  func.func @main(%h: tensor<1x6x8xf32> {onnx.name = "h"}, %m: tensor<1x1x1x6xf32> {onnx.name = "m"}) -> (tensor<1x6x8xf32> {onnx.name = "y"}) {
    %g1 = onnx.weight "g1" : tensor<8xf32>
    %be1 = onnx.weight "be1" : tensor<8xf32>
    %x = transformer.layer_norm %h, %g1, %be1 eps(1.0e-05) : (tensor<1x6x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
    %wq = onnx.weight "wq" : tensor<8x8xf32>
    %q = transformer.linear %x, %wq : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
    %wk = onnx.weight "wk" : tensor<8x8xf32>
    %bk = onnx.weight "bk" : tensor<8xf32>
    %k = transformer.linear %x, %wk, %bk : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
    %wv = onnx.weight "wv" : tensor<8x8xf32>
    %v = transformer.linear %x, %wv : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
    %a = transformer.attention %q, %k, %v MASK heads(2) scale(0.5) CAUSAL : (tensor<1x6x8xf32>, tensor<1x6x8xf32>, tensor<1x6x8xf32>MASKTYPE) -> tensor<1x6x8xf32>
    %wo = onnx.weight "wo" : tensor<8x8xf32>
    %o = transformer.linear %a, %wo : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
    %r1 = transformer.add %h, %o : (tensor<1x6x8xf32>, tensor<1x6x8xf32>) -> tensor<1x6x8xf32>
    %y2 = transformer.layer_norm %r1, %g1, %be1 eps(1.0e-05) : (tensor<1x6x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
    %w1 = onnx.weight "w1" : tensor<8x16xf32>
    %f1 = transformer.linear %y2, %w1 : (tensor<1x6x8xf32>, tensor<8x16xf32>) -> tensor<1x6x16xf32>
    %act = transformer.gelu %f1 approximate("none") : (tensor<1x6x16xf32>) -> tensor<1x6x16xf32>
    %w2 = onnx.weight "w2" : tensor<16x8xf32>
    %f2 = transformer.linear %act, %w2 : (tensor<1x6x16xf32>, tensor<16x8xf32>) -> tensor<1x6x8xf32>
    %y = transformer.add %r1, %f2 : (tensor<1x6x8xf32>, tensor<1x6x8xf32>) -> tensor<1x6x8xf32>
    func.return %y : tensor<1x6x8xf32>
  }
}
"""


def layer_fp32(masked: bool, causal: bool, seed: int = 0):
    """(module, store): the layer with seeded weights, the store attached to the module."""
    text = LAYER_IR.replace("MASKTYPE", ", tensor<1x1x1x6xf32>" if masked else "")
    text = text.replace("MASK", "mask %m" if masked else "")
    text = text.replace("CAUSAL", "causal" if causal else "")
    rng = np.random.default_rng(seed)
    store = WeightStore({
        **{n: (rng.standard_normal(s) * 0.5).astype(np.float32)
           for n, s in (("wq", (D, D)), ("wk", (D, D)), ("wv", (D, D)), ("wo", (D, D)),
                        ("w1", (D, F)), ("w2", (F, D)))},
        "bk": (rng.standard_normal(D) * 0.1).astype(np.float32),
        "g1": np.ones(D, np.float32), "be1": np.zeros(D, np.float32)})
    module = parse_ir(text)
    return module, store


def layer_inputs(padded: int = 0, seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded `h` and a padding mask `m` whose last `padded` keys are masked out."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((1, 1, 1, L), np.float32)
    if padded:
        mask[..., -padded:] = np.finfo(np.float32).min
    return {"h": rng.standard_normal((1, L, D)).astype(np.float32), "m": mask}
