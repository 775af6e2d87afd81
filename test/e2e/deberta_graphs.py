"""DeBERTa-v2-style encoder layers built with onnx.helper, in the form the torch exporters give
after the frontend folds constants: Q, K, V as [B*H, L, d] (3-D batched MatMuls), the
disentangled terms c2p = GatherElements(Q @ PK, I_c2p) / s and p2c = Transpose(
GatherElements(K @ PQ, I_p2c)) / s with constant position tables PK / PQ [B*H, d, P] and
relative-position bucket indices, added to Q K^T / s before the padding-mask Where and the
softmax (docs/design.md section 3.3).

`export="legacy"` adds the TorchScript exporter's `0 + c2p` and one Div constant per use;
`"dynamo"` shares the scale constant. `near_miss` breaks one thing the lift checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto
from lift_onnx_graphs import GraphBuilder


def relative_buckets(length: int, span: int) -> np.ndarray:
    """[L, L] log-bucketed relative positions i - j (DeBERTa-v2's make_log_bucket_position
    shape: exact near 0, logarithmic further out), clamped to [-span, span)."""
    rel = np.arange(length)[:, None] - np.arange(length)[None, :]
    near = span // 2
    far = np.sign(rel) * (near + np.ceil(np.log(np.maximum(np.abs(rel), 1) / near)
                                         / math.log(4) * (span - near)))
    bucket = np.where(np.abs(rel) <= near, rel, far)
    return np.clip(bucket, -span, span - 1).astype(np.int64)


def _heads(b: GraphBuilder, x: str, batch: int, length: int, heads: int, d: int) -> str:
    """x [B, L, H*d] -> [B*H, L, d] (Reshape, Transpose(0, 2, 1, 3), Reshape)."""
    split = b.op("Reshape", [x, b.ints([batch, length, heads, d])])
    moved = b.op("Transpose", [split], perm=[0, 2, 1, 3])
    return b.op("Reshape", [moved, b.ints([batch * heads, length, d])])


def _projection(b: GraphBuilder, x: str, width: int) -> str:
    return b.op("Add", [b.op("MatMul", [x, b.weight(width, width)]), b.weight(width, stem="bias")])


def deberta_layer(b: GraphBuilder, x: str, mask_cond: str | None, batch: int, length: int,
                  width: int, heads: int, *, span: int = 4, export: str = "legacy",
                  terms: Sequence[str] = ("c2p", "p2c"), near_miss: str | None = None) -> str:
    """One DeBERTa self-attention + output projection + residual + LayerNorm on x [B, L, D];
    `mask_cond` a bool [B, 1, L, L] input (True = masked) or None."""
    d, positions = width // heads, 2 * span
    scale = math.sqrt(d * (1 + len(terms)))
    q, k, v = (_heads(b, _projection(b, x, width), batch, length, heads, d) for _ in range(3))
    shared = b.const(np.float32(scale), "scale") if export == "dynamo" else None

    def divide(value: str) -> str:
        return b.op("Div", [value, shared or b.const(np.float32(scale))])

    scores = b.op("MatMul", [q, divide(b.op("Transpose", [k], perm=[0, 2, 1]))])
    buckets = relative_buckets(length, span)
    added: list[str] = []
    for term in terms:
        table = (b.rng.standard_normal((heads, d, positions)) * 0.5).astype(np.float32)
        table = b.const(np.tile(table, (batch, 1, 1)), f"{term}_table")
        reads = k if term == "p2c" else q
        if near_miss == "table_from_activations" and term == "c2p":
            table = b.op("Transpose", [b.op("Slice", [k, b.ints([0]), b.ints([positions]),
                                                      b.ints([1])])], perm=[0, 2, 1])
        index = np.clip((-buckets if term == "p2c" else buckets) + span, 0, positions - 1)
        if near_miss == "index_per_head" and term == "c2p":
            index = np.stack([np.roll(index, h, axis=1) for h in range(heads)] * batch)
        index = b.const(np.broadcast_to(index, (batch * heads, length, length)).copy(), "index")
        gathered = b.op("GatherElements", [b.op("MatMul", [reads, table]), index], axis=-1)
        if term == "p2c":
            gathered = b.op("Transpose", [gathered], perm=[0, 2, 1])
        value = divide(gathered)
        if export == "legacy" and not added:
            value = b.op("Add", [value, b.const(np.float32(0.0), "zero")])
        added.append(value)
    if added:
        scores = b.op("Add", [scores, added[0] if len(added) == 1 else b.op("Add", added)])
    scores = b.op("Reshape", [scores, b.ints([batch, heads, length, length])])
    if mask_cond is not None:
        scores = b.op("Where", [mask_cond, b.const(np.float32(np.finfo(np.float32).min)), scores])
    probs = b.op("Reshape", [b.op("Softmax", [scores], axis=-1),
                             b.ints([batch * heads, length, length])])
    context = b.op("MatMul", [probs, v])
    merged = b.op("Transpose", [b.op("Reshape", [context, b.ints([batch, heads, length, d])])],
                  perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [merged, b.ints([batch, length, width])])
    residual = b.op("Add", [_projection(b, merged, width), x])
    gamma = b.const((1 + 0.1 * b.rng.standard_normal(width)).astype(np.float32), "gamma")
    return b.op("LayerNormalization", [residual, gamma, b.weight(width, stem="beta")],
                axis=-1, epsilon=1e-7)


def deberta_model(batch: int = 1, length: int = 8, width: int = 16, heads: int = 2,
                  layers: int = 2, masked: bool = True, first_token: bool = False,
                  **knobs) -> onnx.ModelProto:
    """`layers` DeBERTa layers on x [B, L, D] with a padding mask (input `attention_mask`
    [B, L] int64, 0 = padding, turned into the Where condition on the host); `first_token`:
    the output is token 0 only (a classifier's read)."""
    b = GraphBuilder(seed=7)
    x = b.input("x", (batch, length, width))
    cond = None
    if masked:
        mask = b.input("attention_mask", (batch, length), TensorProto.INT64)
        rows = b.op("Unsqueeze", [mask, b.ints([1, 2])])
        pairs = b.op("Mul", [rows, b.op("Unsqueeze", [b.op("Squeeze", [rows, b.ints([1])]),
                                                      b.ints([-1])])])
        cond = b.op("Not", [b.op("Cast", [pairs], to=TensorProto.BOOL)])
    for _ in range(layers):
        x = deberta_layer(b, x, cond, batch, length, width, heads, **knobs)
    if first_token:
        x = b.op("Gather", [x, b.const(np.int64(0), "token")], axis=1)
    return b.model([x])


def deberta_inputs(batch: int = 1, length: int = 8, width: int = 16, seed: int = 1,
                   padding: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), np.int64)
    if padding:
        mask[:, -padding:] = 0
    return {"x": rng.standard_normal((batch, length, width)).astype(np.float32),
            "attention_mask": mask}
