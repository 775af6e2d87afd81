"""What the mask operands of `transformer.linear` / `transformer.attention` do to VALUES.

The masked op computes its dense result (every row) and these functions select from it: a
reused row takes its representative's row, a key row a head does not select is 0, a computed
attention row sees only its SPA keys. Rows are independent in these ops, so computing all rows
and selecting gives exactly what the sparse hardware produces for the rows it computes (what it
skips is counted by the lowering and the timing model). Masks without a batch dim (constants
from the weight store) apply to every batch element.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray

SPA_EXCLUDED = np.float32(-np.inf)
"""Additive score for keys outside a computed row's SPA: excluded exactly, as the hardware's
element mask excludes them (a finite value would count when the row's SPA keys are masked
too: a row whose every key is masked). A row with no SPA key is 0."""


def batched(mask: Array, batch: int, rank: int) -> Array:
    """`mask` with its batch dim: one without it (rank - 1 dims) is repeated `batch` times."""
    mask = np.asarray(mask)
    return np.broadcast_to(mask, (batch, *mask.shape)) if mask.ndim == rank - 1 else mask


def take_representative_rows(y: Array, reuse_map: Array) -> Array:
    """Rows with reuse_map[b, i] = r >= 0 take row r of their batch element."""
    reuse_map = batched(reuse_map, y.shape[0], 2)
    source = np.where(reuse_map >= 0, reuse_map, np.arange(reuse_map.shape[1])[None, :])
    return np.take_along_axis(y, source[:, :, None].astype(np.int64), axis=1)


def zero_unselected_keys(y: Array, key_mask: Array) -> Array:
    """Zero row j of head h's column block where key_mask[b, h, j] is 0."""
    key_mask = batched(key_mask, y.shape[0], 3).astype(bool)
    width = y.shape[2]
    heads = key_mask.shape[1]
    keep = np.repeat(key_mask.transpose(0, 2, 1), width // heads, axis=2)  # [B, L, width]
    return np.where(keep, y, np.zeros((), y.dtype))


def spa_additive_mask(mask: Array | None, spa: Array, batch: int) -> Array | None:
    """The attention's additive mask with keys outside SPA excluded; unchanged when SPA keeps
    every key (so k-ratio 1 is bit-identical to dense)."""
    spa = batched(spa, batch, 4).astype(bool)
    if spa.all():
        return mask
    base = np.zeros(spa.shape, np.float32) if mask is None else np.broadcast_to(
        np.asarray(mask, np.float32), spa.shape)
    return np.where(spa, base, SPA_EXCLUDED).astype(np.float32)


def pruning_spa(tokens: Array | None, head_mask: Array | None, batch: int, heads: int,
                length: int) -> Array:
    """SpAtten's token-keep [B, L] and head [B, H] masks as the SPA they amount to: a kept
    head's kept query row attends to the kept keys [B, H, L, L]."""
    t = np.ones((batch, length), bool) if tokens is None else batched(tokens, batch, 2) != 0
    h = np.ones((batch, heads), bool) if head_mask is None else batched(head_mask, batch, 2) != 0
    return h[:, :, None, None] & t[:, None, :, None] & t[:, None, None, :]


def zero_pruned(y: Array, spa: Array) -> Array:
    """Rows of pruned tokens and column blocks of pruned heads are 0 (not computed)."""
    computed = spa.any(axis=3)  # [B, H, L]: the head's row attends to some key
    width = y.shape[2] // computed.shape[1]
    keep = np.repeat(computed.transpose(0, 2, 1), width, axis=2)
    return np.where(keep, y, np.zeros((), y.dtype))
