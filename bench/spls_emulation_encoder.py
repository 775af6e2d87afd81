"""The fp32 SPLS forward pass of bench/spls_emulation.py: encoder weights, one layer, the model.

Owns the numpy forward pass of each encoder layer (pre-LN ViT or post-LN BERT) in which the
prediction of runtime/spls_kernels.py decides, per layer and input, which rows are reused and
which keys each computed row attends to, exactly as docs/design.md section 6 defines SPLS; the
per-layer MAC counts (dense and executed, per component), reuse and top-k recall; and the
control: random row reuse at the same per-layer reuse count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from esact_cc.passes.insert_spls import LayerOptions
from esact_cc.runtime.spls_kernels import (
    hlog_encode,
    k_from_ratio,
    local_similarity,
    masked_softmax,
    predict_attention,
    topk_mask,
)

COMPONENTS = ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2")


# ----------------------------------------------------------------------------- model


@dataclass
class LayerWeights:
    """One encoder layer, linear weights in x @ w layout ([in, out])."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    hlog_cache: dict = field(default_factory=dict)  # bits -> (HLog W_Q, HLog W_K)

    def hlog_weights(self, bits: int) -> tuple:
        if bits not in self.hlog_cache:
            self.hlog_cache[bits] = (hlog_encode(self.wq, bits), hlog_encode(self.wk, bits))
        return self.hlog_cache[bits]


@dataclass
class Encoder:
    """A stack of encoder layers with the input prefix and the output head as callables."""

    name: str
    layers: list[LayerWeights]
    heads: int
    norm: str  # "pre" (ViT) or "post" (BERT)
    eps: float
    embed: Callable[[object], np.ndarray]  # sample -> residual stream [L, D] entering layer 0
    head: Callable[[np.ndarray], np.ndarray]  # final residual stream -> model output


# The options of docs/design.md section 6, with the pass's own defaults (one source of truth).
SplsOptions = LayerOptions


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as both models use."""
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# ----------------------------------------------------------------------------- one layer


@dataclass
class LayerStats:
    dense: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    executed: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPONENTS, 0.0))
    prediction_products: float = 0.0
    shift_adds: float = 0.0
    rows: int = 0
    reused_rows: int = 0
    recall_sum: float = 0.0
    recall_rows: int = 0

    def add(self, other: LayerStats) -> None:
        for c in COMPONENTS:
            self.dense[c] += other.dense[c]
            self.executed[c] += other.executed[c]
        self.prediction_products += other.prediction_products
        self.shift_adds += other.shift_adds
        self.rows += other.rows
        self.reused_rows += other.reused_rows
        self.recall_sum += other.recall_sum
        self.recall_rows += other.recall_rows


ReuseOverride = Callable[[int, np.ndarray, int], np.ndarray]  # (layer, reuse_map, window) -> map


def run_layer(r: np.ndarray, w: LayerWeights, enc: Encoder, opts: SplsOptions | None,
              layer: int, reuse_override: ReuseOverride | None) -> tuple[np.ndarray, LayerStats,
                                                                           np.ndarray]:
    """One encoder layer on residual stream r [L, D]; opts None = dense. Returns (out, stats,
    reuse_map)."""
    length, dim = r.shape
    heads = enc.heads
    dh = dim // heads
    ffn = w.w1.shape[1]
    x = layer_norm(r, w.ln1_g, w.ln1_b, enc.eps) if enc.norm == "pre" else r
    stats = LayerStats(rows=length)
    for c in ("q", "k", "v", "o"):
        stats.dense[c] = length * dim * dim
    stats.dense["qk"] = stats.dense["pv"] = length * length * dim
    stats.dense["ffn1"] = stats.dense["ffn2"] = length * dim * ffn

    q_all = x @ w.wq + w.bq
    k_all = x @ w.wk + w.bk
    v_all = x @ w.wv + w.bv

    def split(t):
        return t.reshape(length, heads, dh).transpose(1, 0, 2)
    qh, kh, vh = split(q_all), split(k_all), split(v_all)
    true_scores = qh @ kh.transpose(0, 2, 1) / math.sqrt(dh)

    reuse = np.full(length, -1, dtype=np.int32)
    attend = np.ones((heads, length, length), dtype=bool)
    key_mask = np.ones((heads, length), dtype=bool)
    if opts is not None:
        pam, pam_scale, shift_adds = predict_attention(x, *w.hlog_weights(opts.hlog_bits),
                                                       heads, opts.hlog_bits, w.bq, w.bk)
        stats.shift_adds = shift_adds
        stats.prediction_products = 2 * length * dim * dim + length * length * dim
        k = k_from_ratio(opts.k_ratio, length)
        spa = topk_mask(pam, k)
        exact = topk_mask(true_scores, k)
        stats.recall_sum = float((spa & exact).sum(-1).mean(0).sum() / k)
        stats.recall_rows = length
        logit_scale = 1.0 if opts.pam_scale == "one" else 1.0 / math.sqrt(dh)
        prob = (masked_softmax(pam * pam_scale * logit_scale)
                if opts.similarity == "cosprob" else None)
        reuse, spa_keys = local_similarity(spa, prob, opts.window, opts.threshold,
                                           opts.similarity, k, opts.first_reference)
        if reuse_override is not None:
            reuse = reuse_override(layer, reuse, opts.window)
            spa_keys = spa[:, reuse == -1, :].any(axis=1)
        if opts.attention == "topk":
            attend = spa
            key_mask = spa_keys
    computed = np.flatnonzero(reuse == -1)
    rep = np.where(reuse == -1, np.arange(length), reuse)
    nc = len(computed)
    stats.reused_rows = length - nc

    probs = masked_softmax(true_scores[:, computed, :], attend[:, computed, :])
    ctx = (probs @ vh).transpose(1, 0, 2).reshape(nc, dim)
    attn_c = ctx @ w.wo + w.bo
    slot = np.zeros(length, dtype=np.int64)
    slot[computed] = np.arange(nc)
    attn = attn_c[slot[rep]]  # a reused row takes its representative's sublayer output

    if enc.norm == "pre":
        r1 = r + attn
        y = layer_norm(r1, w.ln2_g, w.ln2_b, enc.eps)
        f_c = gelu(y[computed] @ w.w1 + w.b1) @ w.w2 + w.b2
        out = r1 + f_c[slot[rep]]
    else:
        r1 = layer_norm(r + attn, w.ln1_g, w.ln1_b, enc.eps)
        f_c = gelu(r1[computed] @ w.w1 + w.b1) @ w.w2 + w.b2
        out = layer_norm(r1 + f_c[slot[rep]], w.ln2_g, w.ln2_b, enc.eps)

    stats.executed["q"] = stats.executed["o"] = nc * dim * dim
    stats.executed["k"] = stats.executed["v"] = float(key_mask.sum()) * dim * dh
    stats.executed["qk"] = stats.executed["pv"] = float(attend[:, computed, :].sum()) * dh
    stats.executed["ffn1"] = stats.executed["ffn2"] = nc * dim * ffn
    return out, stats, reuse


def run_model(enc: Encoder, sample: object, options: list[SplsOptions | None],
              reuse_override: ReuseOverride | None = None
              ) -> tuple[np.ndarray, list[LayerStats], list[np.ndarray]]:
    r = enc.embed(sample)
    all_stats: list[LayerStats] = []
    maps: list[np.ndarray] = []
    for i, w in enumerate(enc.layers):
        r, stats, reuse = run_layer(r, w, enc, options[i], i, reuse_override)
        all_stats.append(stats)
        maps.append(reuse)
    return enc.head(r), all_stats, maps


def random_reuse_like(reference_maps: list[np.ndarray], rng: np.random.Generator,
                      first_reference: int = 0) -> ReuseOverride:
    """Control: per layer, the same number of reused rows as `reference_maps`, chosen at random
    (never row 0, nor rows before `first_reference`); each takes a random one of the last
    `window` computed rows before it (rows before `first_reference` excluded)."""
    first = max(1, first_reference)

    def override(layer: int, reuse: np.ndarray, window: int) -> np.ndarray:
        n_reused = int((reference_maps[layer] != -1).sum())
        length = len(reuse)
        chosen = set(rng.choice(np.arange(first, length), size=n_reused, replace=False).tolist()) \
            if n_reused else set()
        out = np.full(length, -1, dtype=np.int32)
        computed: list[int] = []
        for i in range(length):
            if i < first_reference:
                continue
            if i in chosen and computed:
                refs = computed[-max(window, 1):]
                out[i] = refs[int(rng.integers(len(refs)))]
            else:
                computed.append(i)
        return out

    return override
