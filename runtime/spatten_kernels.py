"""Numerics of SpAtten's cascade pruning (Wang et al., HPCA 2021), shared by the reference
interpreter (`spatten.select`) and the functional model (SPATTEN_TOPK, SPATTEN_SCORE), so the
compiled program's masks equal the interpreter's bit for bit.

SpAtten, per layer l and batch element:
- cascade token pruning: each token's importance is the attention probability it receives,
  summed over heads and (kept) query rows and accumulated over layers; before layer l the
  top-k engine keeps the `token_keep` most important tokens of those still kept (a pruned
  token never returns: its score is -inf). Pruned tokens are removed as keys and their rows
  are not computed (paper section 3.1);
- cascade head pruning: a head's importance is the magnitude of its output, sum |P_h V_h|,
  accumulated over layers; the top-k engine keeps `head_keep` heads (section 3.2);
- progressive quantization: the probabilities are first computed from the MSBs of Q and K;
  a query row whose largest probability is below `requant_threshold` (a flat distribution,
  where quantization error matters most) is recomputed with the LSBs re-fetched from DRAM
  (section 3.4; the decision is RequantDecision.scala in mit-han-lab/spatten: need_requant =
  row max < threshold).

Constants and choices of ours (not found in the paper or code, or changed for this machine):
- MSB_BITS = 4 of our INT8 codes (the paper splits 12-bit operands; our codes are 8-bit);
- the importance is computed by this side unit from the MSB-first probabilities, while the
  attention itself stays INT8 (SpAtten computes both from the same progressive operands);
- layer 0 keeps everything (no accumulated score yet); k = max(1, ceil(ratio * n)) of the
  n tokens (heads) considered, ties to the lower index;
- the first `protect` tokens are never pruned (default 1: the class token a classifier head
  reads; the paper prunes BERT's tokens for classification without saying how [CLS] fares,
  and on the digits ViT pruning it costs most of the accuracy);
- the scores accumulate one query row at a time (float32, heads in order, rows in order) and
  a row's head magnitude is computed exactly from probabilities in PROB_FRACTION_BITS fixed
  point, so scoring a head in query tiles (long sequences: SPATTEN_SCORE per tile) gives the
  bits scoring it whole does.
"""

from __future__ import annotations

import math

import numpy as np

INT8_BITS = 8
MSB_BITS = 4
LSB_BITS = INT8_BITS - MSB_BITS
DEFAULT_REQUANT_THRESHOLD = 0.1
"""Our choice (the paper tunes it per task and gives no single value)."""
PROB_FRACTION_BITS = 15
"""Fixed-point fraction of the probabilities in sum |P V| (our choice): with INT8 V, every
partial sum is an integer below 2^53 for up to 65535 keys, so float64 sums are exact in any
order (the head importance of a query tile does not depend on the tiling)."""


def keep_count(ratio: float, n: int) -> int:
    return max(1, min(n, math.ceil(ratio * n - 1e-9)))


def msb_codes(codes: np.ndarray) -> np.ndarray:
    """INT8 codes with their LSB_BITS low bits dropped (floor to a multiple of 2^LSB_BITS)."""
    c = np.asarray(codes, np.int64)
    return (c >> LSB_BITS) << LSB_BITS


def top_k(scores: np.ndarray, ratio: float, protect: int = 0) -> np.ndarray:
    """The top-k engine: keep ceil(ratio * alive) of the finite scores, ties to the lower
    index, the first `protect` entries always (while alive); -inf (already pruned) never
    returns. bool [n]."""
    scores = np.asarray(scores, np.float32)
    alive = np.isfinite(scores)
    forced = alive & (np.arange(scores.size) < protect)
    k = max(keep_count(ratio, int(alive.sum())) if alive.any() else 0, int(forced.sum()))
    rank = np.where(forced, np.inf, np.where(alive, scores, -np.inf))
    order = np.argsort(-rank, kind="stable")[:k]
    keep = np.zeros(scores.shape, dtype=bool)
    keep[order] = True
    return keep & alive


def _softmax(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    z = np.where(valid, z, -np.inf)
    peak = z.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.where(valid, np.exp(z - peak), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def progressive_probabilities(q8: np.ndarray, k8: np.ndarray, scale: np.float32,
                              add_mask: np.ndarray | None, valid: np.ndarray,
                              requant_threshold: float) -> tuple[np.ndarray, int]:
    """One head's probabilities [Lq, Lk] (float32) from the MSBs of Q and K, rows whose max is
    below `requant_threshold` recomputed with all bits; and the number of such rows."""
    def probs(q, k):
        z = (q @ k.T).astype(np.float64) * np.float64(scale)
        if add_mask is not None:
            z = z + np.asarray(add_mask, np.float32).astype(np.float64)
        return _softmax(z, valid).astype(np.float32)

    p = probs(msb_codes(q8), msb_codes(k8))
    flat = (p.max(axis=1) < np.float32(requant_threshold)) & valid.any(axis=1)
    if flat.any():
        full = probs(np.asarray(q8, np.int64), np.asarray(k8, np.int64))
        p[flat] = full[flat]
    return p, int(flat.sum())


def accumulate_rows(total: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """total + rows[0] + rows[1] + ... in float32, one row at a time (the scoring unit's
    accumulator): the same bits whether the rows arrive in one call or in several."""
    stacked = np.concatenate([np.asarray(total, np.float32)[None], np.asarray(rows, np.float32)])
    return np.add.accumulate(stacked, axis=0)[-1]


def row_magnitudes(p: np.ndarray, v8: np.ndarray) -> np.ndarray:
    """sum |P V| of each query row (V as INT8 codes: a relative magnitude), float32 [rows],
    exact from PROB_FRACTION_BITS fixed-point probabilities."""
    unit = float(1 << PROB_FRACTION_BITS)
    out = np.round(np.asarray(p, np.float64) * unit) @ np.asarray(v8, np.float64)
    return (np.abs(out).sum(axis=1) / unit).astype(np.float32)


def select_masks(scores: np.ndarray, head_scores: np.ndarray, token_keep: float,
                 head_keep: float, first: bool, protect: int) -> tuple[np.ndarray, np.ndarray]:
    """The token [L] and head [H] keep masks of one batch element from the accumulated scores
    of the earlier layers (`first`: no earlier layer, everything kept); the first `protect`
    tokens are kept."""
    if first:
        return np.ones(scores.shape, bool), np.ones(head_scores.shape, bool)
    return top_k(scores, token_keep, protect), top_k(head_scores, head_keep)


def element_mask(tokens: np.ndarray, heads: np.ndarray, lq: int) -> np.ndarray:
    """[H, Lq, Lk] element mask a masked attention reads: kept head, kept query, kept key
    (self-attention: Lq = Lk, so tokens index both)."""
    assert lq == tokens.shape[0]
    return heads[:, None, None] & tokens[None, :, None] & tokens[None, None, :]


def begin_layer(scores: np.ndarray | None, head_scores: np.ndarray | None, token_keep: float,
                head_keep: float, length: int, heads: int, protect: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batch element's (token mask, head mask, scores, head scores) at the start of a
    layer: the top-k of the earlier scores, pruned entries -inf (the SPATTEN_TOPK step)."""
    first = scores is None
    s = np.zeros(length, np.float32) if first else np.asarray(scores, np.float32).copy()
    hs = np.zeros(heads, np.float32) if first else np.asarray(head_scores, np.float32).copy()
    tokens, kept_heads = select_masks(s, hs, token_keep, head_keep, first, protect)
    s[~tokens] = -np.inf
    hs[~kept_heads] = -np.inf
    return tokens, kept_heads, s, hs


def score_rows(scores: np.ndarray, head_score: np.ndarray, first_row: int, q8: np.ndarray,
               k8: np.ndarray, v8: np.ndarray, scale: np.float32, add_mask: np.ndarray | None,
               visible: np.ndarray | None, requant_threshold: float) -> int:
    """Add one head's importance over query rows [first_row, first_row + len(q8)) to the
    token scores [L] and its head score (a 1-element view) in place: the SPATTEN_SCORE step.
    Each kept query row adds the probability it gives each key to that key's score and its
    sum |P V| to the head's, row by row. `add_mask` and `visible` cover those rows (or
    broadcast); K and V hold all L keys. A pruned head (score -inf) is skipped, pruned rows
    and keys are not computed. Returns the rows that re-fetched their LSBs."""
    if not np.isfinite(head_score[0]):
        return 0
    tokens = np.isfinite(scores)
    kept_rows = tokens[first_row:first_row + len(q8)]
    valid = kept_rows[:, None] & tokens[None, :]
    if visible is not None:
        valid = valid & visible
    p, refetched = progressive_probabilities(q8, k8, scale, add_mask, valid, requant_threshold)
    p = p[kept_rows]
    scores[tokens] = accumulate_rows(scores, p)[tokens]
    head_score[...] = accumulate_rows(head_score, row_magnitudes(p, v8)[:, None])
    return refetched
