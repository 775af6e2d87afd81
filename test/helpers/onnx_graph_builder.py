"""The pieces every hand-built Transformer test graph repeats: initializers, named nodes, biased
linears, layer norms and the multi-head split of Q / K / V (onnx.helper only, no torch).

Each test graph (`vit_graph.py`, `test/e2e/conv_block_graphs.py`) writes only its own shape:
its stem, its attention's scale, its FFN, its head."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects the initializers and nodes of one graph; `hidden` is the model width the layer
    norms normalise, `rng` draws every weight (so a seed fixes the graph)."""

    def __init__(self, hidden: int, rng: np.random.Generator) -> None:
        self.hidden, self.rng = hidden, rng
        self.inits: list = []
        self.nodes: list = []

    def init(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        scale = 1.0 / np.sqrt(shape[0]) if scale is None else scale
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, prefix: str, n_in: int, n_out: int) -> str:
        mm = self.node("MatMul", [x, self.weight(f"{prefix}.weight", (n_in, n_out))],
                       f"{prefix}/MatMul")
        return self.node("Add", [mm, self.weight(f"{prefix}.bias", (n_out,), 0.1)],
                         f"{prefix}/Add")

    def layer_norm(self, x: str, prefix: str) -> str:
        g = self.init(f"{prefix}.weight",
                      (1 + 0.1 * self.rng.standard_normal(self.hidden)).astype(np.float32))
        b = self.init(f"{prefix}.bias",
                      (0.1 * self.rng.standard_normal(self.hidden)).astype(np.float32))
        return self.node("LayerNormalization", [x, g, b], f"{prefix}/LayerNorm", axis=-1,
                         epsilon=1e-5)

    def heads(self, h: str, prefix: str, split_shape: str) -> dict[str, str]:
        """Q, K, V of `h` split into heads: Q and V [B, heads, L, d], K transposed [B, heads,
        d, L], as HF eager attention exports them (`split_shape` names the [B, L, heads, d]
        shape initializer)."""
        out = {}
        for name in ("query", "key", "value"):
            r = self.node("Reshape", [self.linear(h, f"{prefix}/{name}", self.hidden,
                                                  self.hidden), split_shape],
                          f"{prefix}/{name}/Reshape")
            out[name] = self.node("Transpose", [r], f"{prefix}/{name}/Transpose",
                                  perm=[0, 2, 3, 1] if name == "key" else [0, 2, 1, 3])
        return out
