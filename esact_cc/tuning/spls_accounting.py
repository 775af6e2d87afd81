"""Compiler-side SPLS accounting: what an SPLS program computes, per layer and component.

From a module after `insert-spls` (FP32 or INT8 `transformer` ops) and the values
its prediction ops produced on one input (PAM, SPA, reuse map, key mask, recorded by an
interpreter), count per layer the dense MACs and the MACs the sparse hardware executes, for the
components of docs/design.md section 6: q, k, v (projections), qk, pv (attention), o (output
projection), ffn1, ffn2; plus the prediction's HLog products and the reused rows.

Counting rules (the same as bench/spls_emulation_encoder.py, so the two agree):
- padding is not sparsity: only real tokens count, dense and executed alike. A key is real if
  some row of the PAM sees it (`spls_kernels.unmasked_keys`: PAM plus the padding mask is far
  below any predicted logit where the mask hides a key); a row is real
  iff its own key is (self-attention, right padding). The attention terms count the (row, key)
  pairs the mask lets through, so a causal model's dense baseline is its triangle.
- a reused row executes nothing of q, o, ffn1, ffn2 and of its attention row;
- k, v: with a key-masked projection (`attention=topk`) only the keys some computed row
  selects, per head; else all real keys;
- qk, pv: per computed real row, its SPA keys (`attention=topk`) or all visible keys;
- prediction: HLog products Q^ = X W_Q, K^ = X W_K over real rows, and PAM over visible pairs;
  `PREDICTION_MAC_PER_PRODUCT` MACs each (docs/design.md section 6: 0.1), or the price the
  hardware model charges (`WorkSummary.mac_per_product`, tuning/prediction_price.py);
- mask quality: top-k recall, |SPA_i & exact top-k_i| / k averaged over heads, for computed
  real rows, the exact top-k taken from the attention's own Q and K. Measured only with
  `attention=dense` (with `topk` the program never generates the keys SPA drops, so the exact
  scores are not in it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from esact_cc.dialects import spls, transformer
from esact_cc.passes.layer_roles import component_of, layers_and_roles
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.spls_kernels import topk_mask, unmasked_keys

# The run report's counting (runtime/spls_summary.py), so the tuner and the report agree: one
# HLog product costs 0.1 INT8 MAC (docs/design.md section 6), over the same components.
from esact_cc.runtime.spls_summary import PREDICTION_MAC_PER_PRODUCT
from esact_cc.runtime.spls_summary import SPLS_COMPONENTS as COMPONENTS

ROW_REUSE_COMPONENTS = ("q", "o", "ffn1", "ffn2")
LAYER_LINEAR_ROLES = ("q", "k", "v", "o", "ffn_up", "ffn_gate", "ffn_down")



def _row_masked(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.rows is not None


def _key_masked(op: Operation) -> bool:
    return isinstance(op, transformer.LinearOp) and op.keys is not None


def is_masked_attention(op: Operation) -> bool:
    """An attention with a reuse map (what an SPLS layer's attention is)."""
    return isinstance(op, transformer.AttentionOp) and op.rows is not None


def _shape(value: SSAValue) -> tuple[int, ...]:
    typ = value.type
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


@dataclass(frozen=True)
class SplsLayer:
    """The ops and sizes of one SPLS layer (static; found once per module)."""

    index: int
    attention: Operation
    predict: spls.PredictAttentionOp
    topk: spls.TopKOp
    similarity: spls.LocalSimilarityOp
    heads: int
    head_dim: int
    x_dim: int
    qk_width: int
    k_width: int
    """Columns of K^ (grouped-query attention: the K heads' only)."""
    linears: tuple[tuple[str, int, int, bool], ...]
    """(component, in, out, key-masked) of q, k, v, o, ffn1, ffn2 (those found)."""
    sparse_attention: bool


def find_spls_layers(module: ModuleOp) -> list[SplsLayer]:
    """The SPLS layers of a module, in program order (one per `spls.local_similarity`), each
    with the layer index and its linears with the components their roles name
    (passes/layer_roles.py)."""
    stamps = {op: s for f in module.walk() if isinstance(f, func.FuncOp)
              for op, s in layers_and_roles(f).items()}
    layers: list[SplsLayer] = []
    for op in module.walk():
        if not isinstance(op, spls.LocalSimilarityOp):
            continue
        topk = op.spa.owner
        if not isinstance(topk, spls.TopKOp) or not isinstance(topk.scores.owner,
                                                               spls.PredictAttentionOp):
            raise CompileError(f"spls accounting: layer {len(layers)}: SPA is not "
                               "spls.topk(spls.predict_attention)")
        predict = topk.scores.owner
        users = [use.operation for use in op.reuse_map.uses]
        attention = next((u for u in users if is_masked_attention(u)), None)
        if attention is None:
            raise CompileError(f"spls accounting: layer {len(layers)}: no masked attention "
                               "uses the reuse map")
        row_linears = [u for u in users if _row_masked(u)]
        linears: list[tuple[str, int, int, bool]] = []
        q_op = attention.operands[0].owner
        for linear in [q_op, attention.operands[1].owner, attention.operands[2].owner,
                       *[u for u in row_linears if u is not q_op]]:
            if not isinstance(linear, transformer.LinearOp):
                continue
            name = component_of(stamps[linear])
            w_in, w_out = _shape(linear.operands[1])
            linears.append((name, w_in, w_out, _key_masked(linear)))
        heads = predict.num_heads.value.data
        qk_width = _shape(predict.wq)[1]
        layers.append(SplsLayer(stamps[attention].layer, attention, predict, topk, op, heads, qk_width // heads,
                                _shape(predict.x)[-1], qk_width, _shape(predict.wk)[1],
                                tuple(linears),
                                attention.spa is not None))
    return layers


@dataclass(frozen=True)
class DenseLayer:
    """A layer left without prediction (`prediction=off`): its work counts, unchanged, in the
    dense and the executed work alike, so the whole model's reduction stays comparable
    between settings that predict in different layers."""

    index: int
    heads: int
    head_dim: int
    linears: tuple[tuple[str, int, int], ...]
    """(component, in, out) of the layer's q, k, v, o, ffn1, ffn2 linears."""


def attention_layer_indices(module: ModuleOp) -> list[int]:
    """The stamped layer index of every attention of the module."""
    return sorted({s.layer for f in module.walk() if isinstance(f, func.FuncOp)
                   for s in layers_and_roles(f).values() if s.role == "attention"})


def find_dense_layers(module: ModuleOp, indices: Iterable[int]) -> list[DenseLayer]:
    """The layers `indices` of a module, as the dense program has them (their stamped
    attention and linears)."""
    wanted = set(indices)
    stamps = {op: s for f in module.walk() if isinstance(f, func.FuncOp)
              for op, s in layers_and_roles(f).items() if s.layer in wanted}
    found: dict[int, DenseLayer] = {}
    for op, where in stamps.items():
        if where.role != "attention" or not isinstance(op, transformer.AttentionOp):
            continue
        heads = op.num_heads.value.data
        linears = tuple((component_of(s), *_shape(o.operands[1]))
                        for o, s in stamps.items() if s.layer == where.layer
                        and _counted_as_in_spls_layers(o, s.role))
        found[where.layer] = DenseLayer(where.layer, heads, _shape(op.operands[0])[-1] // heads,
                                        linears)
    missing = sorted(wanted - set(found))
    if missing:
        raise CompileError(f"spls accounting: no attention layer {missing[0]} in the module")
    return [found[i] for i in sorted(found)]


def _counted_as_in_spls_layers(op: Operation, role: str) -> bool:
    """The linears `find_spls_layers` counts in a predicted layer: Q, K and V, and the others
    insert-spls row-masks (not INT8 ones with per-group input scales, which it leaves dense
    and uncounted), so the denominator does not move when a layer's prediction goes off."""
    if not isinstance(op, transformer.LinearOp) or role not in LAYER_LINEAR_ROLES:
        return False
    return role in ("q", "k", "v") or op.group_scales is None


def count_dense_layer(layer: DenseLayer, rows: int, pairs_per_head: float) -> LayerWork:
    """Work of a dense layer on inputs with `rows` real rows and `pairs_per_head` visible
    (row, key) pairs per head (those of a predicted layer on the same inputs: every layer of
    an encoder sees the same padding)."""
    work = LayerWork(predicted=False, head_width=layer.heads * layer.head_dim, rows=rows)
    attention = pairs_per_head * layer.heads * layer.head_dim
    for name in ("qk", "pv"):
        work.dense[name] = work.executed[name] = attention
    for name, w_in, w_out in layer.linears:
        work.dense[name] += rows * w_in * w_out
        work.executed[name] += rows * w_in * w_out
    return work


@dataclass
class LayerWork:
    """MAC counts of one layer, summed over the inputs counted."""

    dense: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    executed: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    prediction_products: float = 0.0
    rows: int = 0
    reused_rows: int = 0
    recall_sum: float = 0.0
    recall_rows: int = 0
    predicted: bool = True
    """False: a layer left without prediction (`count_dense_layer`)."""
    head_width: int = 0
    """heads x head_dim of the layer (what `dense["qk"]` is per visible pair)."""

    @property
    def pairs_per_head(self) -> float:
        """Visible (row, key) pairs per head, from the attention's dense work."""
        return self.dense["qk"] / self.head_width if self.head_width else 0.0

    def add(self, other: LayerWork) -> None:
        for c in COMPONENTS:
            self.dense[c] += other.dense.get(c, 0.0)
            self.executed[c] += other.executed.get(c, 0.0)
        self.prediction_products += other.prediction_products
        self.rows += other.rows
        self.reused_rows += other.reused_rows
        self.recall_sum += other.recall_sum
        self.recall_rows += other.recall_rows
        self.predicted, self.head_width = other.predicted, other.head_width

    def as_dict(self) -> dict[str, object]:
        return {"dense_macs": dict(self.dense), "executed_macs": dict(self.executed),
                "prediction_products": self.prediction_products, "rows": self.rows,
                "reused_rows": self.reused_rows, "predicted": self.predicted}


def count_layer(layer: SplsLayer, pam: np.ndarray, spa: np.ndarray, reuse: np.ndarray,
                keys: np.ndarray, q: np.ndarray | None = None,
                k: np.ndarray | None = None) -> LayerWork:
    """Work of one layer on one batch: pam/spa [B, H, L, L], reuse [B, L], keys [B, H, L];
    q, k [B, L, D]: the attention's operands (for the top-k recall; optional)."""
    work = LayerWork(head_width=layer.heads * layer.head_dim)
    for b in range(pam.shape[0]):
        visible = unmasked_keys(pam[b])  # [H, L, L]
        real = visible.any(axis=(0, 1))  # keys some row sees = real tokens
        visible = visible & real[None, :, None]
        computed = real & (reuse[b] < 0)
        rows, done = int(real.sum()), int(computed.sum())
        work.rows += rows
        work.reused_rows += rows - done
        pairs = float(visible.sum())  # (head, row, key) pairs, dense
        attended = visible & spa[b].astype(bool) if layer.sparse_attention else visible
        pairs_done = float(attended[:, computed, :].sum())
        work.dense["qk"] = work.dense["pv"] = work.dense["qk"] + pairs * layer.head_dim
        work.executed["qk"] += pairs_done * layer.head_dim
        work.executed["pv"] = work.executed["qk"]
        for name, w_in, w_out, key_masked in layer.linears:
            work.dense[name] += rows * w_in * w_out
            if name in ROW_REUSE_COMPONENTS:
                work.executed[name] += done * w_in * w_out
            elif key_masked:
                per_head = w_out // layer.heads
                work.executed[name] += float((keys[b].astype(bool) & real[None, :]).sum()) \
                    * w_in * per_head
            else:
                work.executed[name] += rows * w_in * w_out
        work.prediction_products += rows * layer.x_dim * (layer.qk_width + layer.k_width) \
            + pairs * layer.head_dim
        if q is not None and k is not None and not layer.sparse_attention and done:
            top = layer.topk.k.value.data
            heads, dh = layer.heads, layer.head_dim
            qh = q[b].reshape(-1, heads, dh).transpose(1, 0, 2)[:, computed, :]
            group = layer.qk_width // layer.k_width  # query heads per K head
            kh = np.repeat(k[b].reshape(-1, heads // group, dh), group, axis=1).transpose(1, 2, 0)
            exact = topk_mask(np.matmul(qh.astype(np.float64), kh), top, visible[:, computed, :])
            hits = (exact & spa[b].astype(bool)[:, computed, :]).sum(axis=-1)  # [H, rows]
            kept = np.maximum(exact.sum(axis=-1), 1)  # k, or fewer visible keys
            work.recall_sum += float((hits / kept).mean(axis=0).sum())
            work.recall_rows += done
    return work


@dataclass
class WorkSummary:
    """Totals over layers and inputs, and the headline ratios."""

    layers: list[LayerWork]
    mac_per_product: float = PREDICTION_MAC_PER_PRODUCT
    """What one HLog product costs in INT8 MACs (tuning/prediction_price.py)."""

    @property
    def dense(self) -> float:
        return sum(sum(w.dense.values()) for w in self.layers)

    @property
    def executed(self) -> float:
        return sum(sum(w.executed.values()) for w in self.layers)

    @property
    def prediction_macs(self) -> float:
        return sum(w.prediction_products for w in self.layers) * self.mac_per_product

    @property
    def reduction(self) -> float:
        """1 - (executed + prediction) / dense: the objective of docs/design.md section 6."""
        dense = self.dense
        return 1.0 - (self.executed + self.prediction_macs) / dense if dense else 0.0

    @property
    def reduction_without_prediction(self) -> float:
        dense = self.dense
        return 1.0 - self.executed / dense if dense else 0.0

    @property
    def reused_fraction(self) -> float:
        rows = sum(w.rows for w in self.layers)
        return sum(w.reused_rows for w in self.layers) / rows if rows else 0.0

    def reused_fraction_per_layer(self) -> list[float]:
        return [w.reused_rows / w.rows if w.rows else 0.0 for w in self.layers]

    @property
    def topk_recall(self) -> float | None:
        rows = sum(w.recall_rows for w in self.layers)
        return sum(w.recall_sum for w in self.layers) / rows if rows else None

    def executed_fraction_by_component(self) -> dict[str, float]:
        out = {}
        for c in COMPONENTS:
            dense = sum(w.dense[c] for w in self.layers)
            out[c] = sum(w.executed[c] for w in self.layers) / dense if dense else 1.0
        return out

    def as_dict(self) -> dict[str, object]:
        return {"reduction": self.reduction,
                "reduction_without_prediction": self.reduction_without_prediction,
                "dense_macs": self.dense, "executed_macs": self.executed,
                "prediction_macs": self.prediction_macs,
                "prediction_mac_per_product": self.mac_per_product,
                "reused_fraction": self.reused_fraction,
                "reused_fraction_per_layer": self.reused_fraction_per_layer(),
                "topk_recall": self.topk_recall,
                "executed_fraction_by_component": self.executed_fraction_by_component()}


def summarize(per_input: Iterable[Sequence[LayerWork]],
              mac_per_product: float = PREDICTION_MAC_PER_PRODUCT) -> WorkSummary:
    """Sum per-layer work over inputs; the prediction priced at `mac_per_product`."""
    totals: list[LayerWork] = []
    for layers in per_input:
        while len(totals) < len(layers):
            totals.append(LayerWork())
        for total, work in zip(totals, layers):
            total.add(work)
    return WorkSummary(totals, mac_per_product)

