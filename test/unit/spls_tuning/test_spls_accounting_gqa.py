"""SPLS accounting of a grouped-query layer: the prediction's products count K^ for the K
heads only, and the top-k recall compares each query head with its own K head (the layer's
K operand has kv_heads heads), as for the same layer with K repeated per query head."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from esact_cc.runtime.spls_kernels import topk_mask
from esact_cc.tuning.spls_accounting import count_layer

HEADS, KV_HEADS, D, L, X_DIM, TOP = 4, 2, 4, 6, 8, 2


def _layer(k_width: int) -> SimpleNamespace:
    return SimpleNamespace(heads=HEADS, head_dim=D, x_dim=X_DIM, qk_width=HEADS * D,
                           k_width=k_width, linears=(), sparse_attention=False,
                           topk=SimpleNamespace(k=SimpleNamespace(value=SimpleNamespace(data=TOP))))


def test_grouped_query_layer_counts_its_key_heads() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, L, HEADS * D))
    k = rng.normal(size=(1, L, KV_HEADS * D))
    repeated = np.repeat(k.reshape(1, L, KV_HEADS, D), HEADS // KV_HEADS, axis=2).reshape(1, L, -1)
    pam = rng.normal(size=(1, HEADS, L, L)).astype(np.float32)
    spa = np.stack([topk_mask(pam[0], TOP)])
    reuse = np.full((1, L), -1, np.int32)
    reuse[0, 3] = 2
    keys = spa.any(axis=2)
    grouped = count_layer(_layer(KV_HEADS * D), pam, spa, reuse, keys, q, k)
    full = count_layer(_layer(HEADS * D), pam, spa, reuse, keys, q, repeated)
    assert grouped.recall_rows == full.recall_rows == L - 1
    assert grouped.recall_sum == full.recall_sum > 0
    saved = full.prediction_products - grouped.prediction_products
    assert saved == L * X_DIM * (HEADS - KV_HEADS) * D
