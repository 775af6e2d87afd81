"""Which keys a query tile of attention computes over: keys no row of the tile can see are
skipped (`passes/lower_attention.py`, `lower_attention_blocks.py`), which the chunked online
softmax (`runtime/online_softmax.py`) makes exact: chunks of keys all of whose positions are
invalid leave a row's running max and sum unchanged, so a tile may start at the first chunk
holding a key one of its rows sees and stop after its last such key.

Two sources of invisibility are known at compile time: the causal rule (row r sees key c <= r +
Lk - Lq) and a constant additive mask's -inf entries (a local window lifted from GPT-Neo's
constant band, `passes/lift_attention.py`). A finite mask value, however negative, counts as
visible (a row whose keys are all masked that way keeps its uniform softmax).
"""

from __future__ import annotations

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.lowering_state import Lowering
from esact_cc.runtime.online_softmax import CHUNK


def key_extent(lq: int, lk: int, r0: int, tq: int) -> int:
    """Keys [0, n) causal query rows [r0, r0 + tq) see (row r sees key c <= r + lk - lq);
    at least one, so a tile whose rows see no key still has an (all-invalid) key row."""
    return max(1, min(lk, r0 + tq + lk - lq))


def constant_visibility(lw: Lowering, op: transformer.AttentionOp, lq: int, lk: int
                        ) -> np.ndarray | None:
    """[lq, lk] bool: where some batch element and head of a constant additive mask is not
    -inf; None without a constant mask or when it hides no key from any row."""
    if op.mask is None or not isinstance(op.mask.owner, WeightOp):
        return None
    mask = np.asarray(lw.weight_array(op.mask, "mask"), np.float32)
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    visible = np.broadcast_to((mask != -np.inf).any(axis=(0, 1)), (lq, lk))
    return None if visible.all() else visible


def tile_key_range(lq: int, lk: int, r0: int, tq: int, causal: bool,
                   visible: np.ndarray | None) -> tuple[int, int]:
    """(first key, keys) query rows [r0, r0 + tq) compute over: from the first CHUNK boundary
    at or below the first key any of them sees to the last such key (causal: the last row's
    diagonal); (0, 1) for a tile that sees no key (its rows are all 0 either way)."""
    end = key_extent(lq, lk, r0, tq) if causal else lk
    if visible is None:
        return 0, end
    seen = np.flatnonzero(visible[r0:r0 + tq, :end].any(axis=0))
    if not len(seen):
        return 0, 1
    first = int(seen[0]) // CHUNK * CHUNK
    return first, int(seen[-1]) + 1 - first
