"""SPLS numerical kernels: the one definition of docs/design.md section 6 in numpy.

Owns the semantics of Sparsity Prediction with Local Similarity; the functional model of the
SPLS instructions (HLOG, BPU, TOPK, SIMILARITY), the compiler's reference interpreter and the
fp32 emulation study all call these functions, so they agree by construction.

Steps (per layer, over the L real tokens of the Q/K/V projection input X):
1. `hlog_quantize`: X, W_Q, W_K onto the HLog level set of `hlog_levels(bits)`, sign and zero
   kept, one scale per tensor (`hlog_scale`).
2. `hlog_matmul`: exact products of HLog-coded matrices by shift-adds (the BPU): Q^ = X W_Q,
   K^ = X W_K, then (re-quantized to HLog) PAM = Q^ K^T per head. `predict_attention` chains it.
3. `topk_mask`: row-wise top-k of PAM under the padding/causal mask = SPA;
   `prediction_scores` is the score path from the integer PAM products to SPA and the probs.
4. `local_similarity`: reuse map (row -> representative) and per-head key mask.

No xdsl here: `runtime/` runs binaries without the compiler.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from . import online_softmax
from .dequantize_rows import dequantized
from .errors import EsactError

MIN_HLOG_BITS = 2
MAX_HLOG_BITS = 16  # level 2^15 times another level still fits int64 sums comfortably
SIMILARITY_MODES = ("overlap", "cosprob")
SimilarityMode = Literal["overlap", "cosprob"]


# ----------------------------------------------------------------------------- HLog


def hlog_levels(bits: int) -> np.ndarray:
    """Nonnegative HLog magnitudes for `bits` n, ascending, including 0.

    {0, 2^0, 2^1, 2^0+2^1, 2^2, 2^1+2^2, ..., 2^(n-3)+2^(n-2), 2^(n-1)}: every power of two up
    to 2^(n-1) and every sum of two consecutive powers below it, 2n-1 values in all. Every
    nonzero level has one or two set bits, so a product of two levels is at most 4 shifted terms.
    """
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise EsactError(f"hlog-bits must be an integer, got {bits!r}")
    if not MIN_HLOG_BITS <= bits <= MAX_HLOG_BITS:
        raise EsactError(f"hlog-bits must be in [{MIN_HLOG_BITS}, {MAX_HLOG_BITS}], got {bits}")
    powers = [1 << i for i in range(bits)]
    pair_sums = [(1 << i) + (1 << (i + 1)) for i in range(bits - 2)]
    return np.array(sorted([0, *powers, *pair_sums]), dtype=np.int64)


def hlog_scale(x: np.ndarray, bits: int) -> float:
    """Per-tensor scale mapping max|x| onto the top level 2^(n-1): max|x| / 2^(n-1).

    An all-zero (or empty) tensor gets scale 1.0 so that quantizing it is well defined.
    """
    hlog_levels(bits)  # validates bits
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return 1.0
    if not np.all(np.isfinite(arr)):
        raise EsactError("hlog scale: tensor contains NaN or infinity")
    peak = float(np.max(np.abs(arr)))
    return peak / float(1 << (bits - 1)) if peak > 0.0 else 1.0


def hlog_quantize(x: np.ndarray, bits: int, scale: float) -> np.ndarray:
    """Signed HLog level values (int32) nearest to x / scale.

    The magnitude |x|/scale goes to the nearest level of `hlog_levels(bits)`; values beyond the
    top level clip to it; the sign of x is kept and 0 stays 0 (as do values that round to level
    0). Tie rule: a magnitude exactly halfway between two levels goes to the LOWER level
    (toward zero), so results never depend on floating-point rounding direction.
    """
    levels = hlog_levels(bits)
    if not (isinstance(scale, (float, int, np.floating, np.integer)) and math.isfinite(scale)
            and scale > 0):
        raise EsactError(f"hlog scale must be a finite positive number, got {scale!r}")
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise EsactError("hlog quantize: tensor contains NaN or infinity")
    magnitude = np.abs(arr) / float(scale)
    midpoints = (levels[:-1] + levels[1:]) / 2.0
    # side="left": a magnitude equal to a midpoint stays on the lower level (the tie rule).
    index = np.searchsorted(midpoints, magnitude, side="left")
    quantized = levels[index] * np.sign(arr).astype(np.int64)
    return quantized.astype(np.int32)


def _hlog_term_counts(values: np.ndarray, name: str) -> np.ndarray:
    """Number of shifted terms of each HLog value (0, 1 or 2); rejects non-HLog values."""
    magnitude = np.abs(values.astype(np.int64))
    terms = np.bitwise_count(magnitude)
    # A two-term level is two ADJACENT powers (3 << i): then m & (m >> 1) is nonzero.
    adjacent = (magnitude & (magnitude >> 1)) != 0
    if not np.all((terms <= 1) | ((terms == 2) & adjacent)):
        raise EsactError(f"hlog matmul: operand {name} holds values that are not HLog levels")
    return terms.astype(np.int64)


def _exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matmul as int64; via float64 BLAS when every partial sum is below 2^53 (exact)."""
    inner = a.shape[-1]
    bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.abs(b), initial=0)) * inner
    if bound < 2.0 ** 53:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def hlog_matmul(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact product of HLog level matrices and the BPU's shift-add count.

    a: [..., M, K], b: [..., K, N] int level values (numpy matmul broadcasting). Returns
    (a @ b as int64, shift_adds). Each product a_ik * b_kj of a t1-term and a t2-term level is
    t1 * t2 shifted copies, each added into the accumulator: it costs t1 * t2 shift-adds (at most
    4); products with a zero operand cost nothing (the BPU skips zero codes).
    """
    a_arr = np.asarray(a)
    b_arr = np.asarray(b)
    if a_arr.ndim < 2 or b_arr.ndim < 2:
        raise EsactError("hlog matmul: operands must have at least 2 dimensions")
    if a_arr.shape[-1] != b_arr.shape[-2]:
        raise EsactError(
            f"hlog matmul: inner dimensions differ ({a_arr.shape} @ {b_arr.shape})")
    terms_a = _hlog_term_counts(a_arr, "a")
    terms_b = _hlog_term_counts(b_arr, "b")
    product = _exact_int_matmul(a_arr, b_arr)
    # sum_{i,k,j} ta[i,k] tb[k,j] = sum_k (sum_i ta[i,k]) (sum_j tb[k,j]); batch dimensions
    # broadcast exactly as in the product itself.
    shift_adds = int(np.sum(np.matmul(terms_a.sum(axis=-2, keepdims=True),
                                      terms_b.sum(axis=-1, keepdims=True))))
    return product, shift_adds


# ----------------------------------------------------------------------------- prediction


HLogTensor = tuple[np.ndarray, float]  # (int32 level values, per-tensor scale)


def hlog_encode(x: np.ndarray, bits: int) -> HLogTensor:
    """HLog codes of a tensor with its per-tensor scale (`hlog_scale`)."""
    scale = hlog_scale(x, bits)
    return hlog_quantize(x, bits, scale), scale


def hardware_hlog_scale(x: np.ndarray, bits: int) -> float:
    """`hlog_scale` rounded to float32, as HLOG's dynamic form writes it and quantizes with."""
    return float(np.float32(hlog_scale(x, bits)))


def hardware_hlog_encode(x: np.ndarray, bits: int) -> HLogTensor:
    """HLog codes with the float32 scale HLOG uses (`hardware_hlog_scale`)."""
    scale = hardware_hlog_scale(x, bits)
    return hlog_quantize(x, bits, scale), scale


def predict_attention(x: np.ndarray, w_q: np.ndarray | HLogTensor, w_k: np.ndarray | HLogTensor,
                      num_heads: int, bits: int, b_q: np.ndarray | None = None,
                      b_k: np.ndarray | None = None, kv_heads: int | None = None
                      ) -> tuple[np.ndarray, float, int]:
    """Predicted attention PAM [H, L, L] of docs/design.md section 6 step 2, computed as the BPU
    does.

    x [L, D] fp32 (the Q/K/V projection input); w_q, w_k [D, N] (x @ w layout) as floats, or
    already HLog-encoded (`hlog_encode(w, bits)`, so a caller quantizes weights once); optional
    biases [N]; grouped-query attention: w_k [D, Nk] with `kv_heads` heads (Nk = kv_heads x
    N / num_heads), query head h predicting against K^ head h // (num_heads / kv_heads).
    X, W_Q, W_K are HLog-quantized with per-tensor scales; Q^ = HLog(X) HLog(W_Q)
    (shift-adds) is dequantized (+ bias) and re-quantized to HLog with its own scale, likewise
    K^, and PAM_h = Q^_h K^_h^T per head by shift-adds again. Returns (PAM int64, pam_scale,
    shift_adds) where PAM * pam_scale approximates the logits Q K^T (divide by sqrt(d_head)
    for softmax).
    """
    x_arr = np.asarray(x, dtype=np.float64)
    if x_arr.ndim != 2:
        raise EsactError(f"predict attention: x must be [L, D], got shape {x_arr.shape}")
    (wq_h, s_wq), (wk_h, s_wk) = [w if isinstance(w, tuple) else hlog_encode(np.asarray(w), bits)
                                  for w in (w_q, w_k)]
    x_h, s_x = hlog_encode(x_arr, bits)
    return predict_attention_from_codes(x_h, s_x, wq_h, s_wq, wk_h, s_wk, num_heads, bits,
                                        b_q, b_k, kv_heads)


def predict_attention_from_codes(x_h: np.ndarray, s_x: float, wq_h: np.ndarray, s_wq: float,
                                 wk_h: np.ndarray, s_wk: float, num_heads: int, bits: int,
                                 b_q: np.ndarray | None = None, b_k: np.ndarray | None = None,
                                 kv_heads: int | None = None) -> tuple[np.ndarray, float, int]:
    """`predict_attention` from HLog codes already made (X [L, D], W_Q [D, N], W_K [D, Nk]
    with scales).

    Q^ and K^ are dequantized and re-quantized as the binary's DEQUANT (acc x s_W per column x
    s_X + bias, rounded to float32) and HLOG (a float32 scale) do, so a code at a level
    boundary is the binary's (in float64 the interpreter's SPA drifted from the binary's on
    BERT-base at 512 tokens from 4 layers on).

    Grouped-query K^ is computed once per K head: its per-tensor HLog scale is the max over
    the K heads' columns, which repeating them per query head would not change, so the PAM is
    that of the repeated W_K exactly; only the K projection's shift-adds shrink."""
    if x_h.ndim != 2:
        raise EsactError(f"predict attention: x must be [L, D], got shape {x_h.shape}")
    length, dim = x_h.shape
    for name, codes in (("w_q", wq_h), ("w_k", wk_h)):
        if codes.ndim != 2 or codes.shape[0] != dim:
            raise EsactError(f"predict attention: {name} must be [{dim}, N], got {codes.shape}")
    width = wq_h.shape[1]
    kv_heads = num_heads if kv_heads is None else kv_heads
    if num_heads <= 0 or width % num_heads or kv_heads <= 0 or num_heads % kv_heads:
        raise EsactError(f"predict attention: width {width} not divisible into {num_heads} heads "
                         f"over {kv_heads} K heads")
    head_dim = width // num_heads
    if wk_h.shape[1] != kv_heads * head_dim:
        raise EsactError(f"predict attention: w_k has {wk_h.shape[1]} columns, not {kv_heads} "
                         f"K heads x {head_dim}")
    total_shift_adds = 0
    projected: list[HLogTensor] = []
    for w_h, s_w, bias in ((wq_h, s_wq, b_q), (wk_h, s_wk, b_k)):
        acc, shift_adds = hlog_matmul(x_h, w_h)
        total_shift_adds += shift_adds
        real = dequantized(acc, np.full(w_h.shape[1], s_w, np.float32),
                           scalars=np.array([s_x], np.float32),
                           bias=None if bias is None else np.asarray(bias, np.float32))
        projected.append(hardware_hlog_encode(real.astype(np.float32), bits))
    (q_h, s_q), (k_h, s_k) = projected
    group = num_heads // kv_heads
    # [kv_heads, group, L, d] @ [kv_heads, 1, d, L]: query head h = g * group + j reads K head g.
    q_heads = q_h.reshape(length, kv_heads, group, head_dim).transpose(1, 2, 0, 3)
    k_heads = k_h.reshape(length, kv_heads, 1, head_dim).transpose(1, 2, 3, 0)
    pam, shift_adds = hlog_matmul(q_heads, k_heads)
    return pam.reshape(num_heads, length, length), s_q * s_k, total_shift_adds + shift_adds


def masked_softmax(logits: np.ndarray, valid_mask: np.ndarray | None = None) -> np.ndarray:
    """Row softmax (float64) over the last axis; invalid entries get probability 0.

    A row with no valid entry is all zeros.
    """
    z = np.asarray(logits, dtype=np.float64)
    valid = np.ones(z.shape, dtype=bool) if valid_mask is None else np.broadcast_to(
        np.asarray(valid_mask, dtype=bool), z.shape)
    z = np.where(valid, z, -np.inf)
    row_max = np.max(z, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(valid, np.exp(z - row_max), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


# ----------------------------------------------------------------------------- top-k


def k_from_ratio(k_ratio: float, num_keys: int) -> int:
    """Keys kept per row for a `k-ratio`: ceil(k_ratio * num_keys), at least 1.

    Ceil so that the kept fraction is never below the ratio; k-ratio 1 keeps every key.
    """
    if not (isinstance(k_ratio, (int, float)) and 0.0 < k_ratio <= 1.0):
        raise EsactError(f"k-ratio must be in (0, 1], got {k_ratio!r}")
    if num_keys <= 0:
        raise EsactError(f"k-ratio: number of keys must be positive, got {num_keys}")
    # The small epsilon keeps 0.2 * 15 = 3.0000000000000004 at 3.
    return max(1, min(num_keys, math.ceil(k_ratio * num_keys - 1e-9)))


MASKED_LOGIT = -5.0e3
"""A PAM entry at or below this is a key the attention mask hides: the prediction adds the
mask as a number (HF exports mask with -10000 or the float32 minimum, -inf is -inf), so a
masked predicted logit lies far below it. For counting (esact-tune's padding-free
accounting); top-k and the similarity take the values as they are."""


def unmasked_keys(pam: np.ndarray) -> np.ndarray:
    """bool: the PAM entries the attention mask (additive or causal) lets through."""
    return np.asarray(pam) > MASKED_LOGIT


def topk_mask(scores: np.ndarray, k: int, valid_mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise top-k mask (SPA) of scores [H, Lq, Lk].

    valid_mask (bool, broadcastable to scores, e.g. [Lk] padding or [Lq, Lk] causal) excludes
    keys, and so does a -inf score (a key an additive -inf mask hides); a row with fewer valid
    keys than k keeps all its valid keys. A large finite negative score (PAM plus a -10000 or
    float32-minimum mask) is an ordinary score: it ranks last, so a row whose every key is
    masked still keeps k keys (docs/design.md section 3 "Masks", section 6 step 3).
    Ties: among equal scores the lower key index wins. Returns bool [H, Lq, Lk].
    """
    arr = np.asarray(scores)
    if arr.ndim != 3:
        raise EsactError(f"top-k: scores must be [H, Lq, Lk], got shape {arr.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise EsactError(f"top-k: k must be a positive integer, got {k!r}")
    if np.issubdtype(arr.dtype, np.floating) and np.any(np.isnan(arr)):
        raise EsactError("top-k: scores contain NaN")
    valid = np.ones(arr.shape, dtype=bool) if valid_mask is None else np.broadcast_to(
        np.asarray(valid_mask, dtype=bool), arr.shape)
    valid = valid & (arr != -np.inf)
    index = np.broadcast_to(np.arange(arr.shape[-1]), arr.shape)
    # Sort keys by (invalid last, higher score first, lower index first); lexsort's last key is
    # the primary one. Negating in float64 is exact for int32 and float scores alike.
    order = np.lexsort((index, -arr.astype(np.float64), ~valid), axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(arr.shape[-1]), arr.shape), axis=-1)
    return (rank < k) & valid


def prediction_scores(acc: np.ndarray, col_scale: np.ndarray, scalars: np.ndarray,
                      add_mask: np.ndarray | None, valid: np.ndarray | None, k: int,
                      probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The prediction unit's score path (PAM_SCORES) over rows x cols integer PAM products:
    (SPA bool, softmax(PAM) float32 rows or None). The float32 values and their order are
    those of the instructions it replaces: DEQUANT (float64 products, in the order src *
    scale[c] * prod(scalars), rounded once), ADD of the mask (one row or rows x cols), TOPK of
    the sums under `valid` (the causal rule; None = every key) and SOFTMAX (scale 1)."""
    pam = dequantized(acc, np.asarray(col_scale), scalars=scalars).astype(np.float32)
    if add_mask is not None:
        pam = (pam.astype(np.float64) + np.asarray(add_mask).astype(np.float64)).astype(np.float32)
    keep = topk_mask(pam[None], k, None if valid is None else valid[None])[0]
    prob = online_softmax.softmax(online_softmax.logits(pam, 1.0, None), valid) if probs else None
    return keep, prob


# ----------------------------------------------------------------------------- similarity


def _row_scores(spa: np.ndarray, prob: np.ndarray | None, i: int, refs: list[int],
                mode: str, k: int) -> np.ndarray:
    """Similarity of row i with each reference row, averaged over heads: [len(refs)]."""
    if mode == "overlap":
        shared = np.logical_and(spa[:, i:i + 1, :], spa[:, refs, :]).sum(axis=-1)
        return shared.mean(axis=0) / float(k)
    assert prob is not None
    row = prob[:, i:i + 1, :]
    other = prob[:, refs, :]
    dot = (row * other).sum(axis=-1)
    norms = np.linalg.norm(row, axis=-1) * np.linalg.norm(other, axis=-1)
    cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return cosine.mean(axis=0)


def _check_similarity(spa: np.ndarray, prob: np.ndarray | None, window: int, mode: str, k: int,
                      first_reference: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated (SPA as bool [H, L, Lk], prob as float64 or None) of a similarity call."""
    spa_arr = np.asarray(spa, dtype=bool)
    if spa_arr.ndim != 3:
        raise EsactError(f"similarity: SPA must be [H, L, Lk], got shape {spa_arr.shape}")
    if mode not in SIMILARITY_MODES:
        raise EsactError(f"similarity must be one of {'|'.join(SIMILARITY_MODES)}, got {mode!r}")
    if not isinstance(window, (int, np.integer)) or window < 0:
        raise EsactError(f"window must be a nonnegative integer, got {window!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise EsactError(f"similarity: k must be a positive integer, got {k!r}")
    if not isinstance(first_reference, (int, np.integer)) or first_reference < 0:
        raise EsactError(f"first-reference must be a nonnegative integer, got {first_reference!r}")
    prob_arr: np.ndarray | None = None
    if mode == "cosprob":
        if prob is None:
            raise EsactError("similarity=cosprob needs the softmax of the predicted attention")
        prob_arr = np.asarray(prob, dtype=np.float64)
        if prob_arr.shape != spa_arr.shape:
            raise EsactError(f"similarity: prob shape {prob_arr.shape} != SPA {spa_arr.shape}")
    return spa_arr, prob_arr


def local_similarity_rows(spa: np.ndarray, prob: np.ndarray | None, window: int,
                          threshold: float, mode: str, k: int, first_reference: int,
                          earlier: np.ndarray, stop: int) -> np.ndarray:
    """Reuse-map entries of rows [len(earlier), stop): `local_similarity` resumed.

    `earlier` holds the decisions of rows 0 .. start-1 (start = len(earlier); -1 = computed,
    else an earlier computed row), e.g. those of earlier row chunks. The window of row i is
    rebuilt from them: the last `window` computed rows before i at or after
    `first_reference`. Only SPA / prob rows < stop are read, so the rows after the chunk may
    still be unknown. Deciding rows in chunks [0, c1), [c1, c2), ... gives exactly the map of
    one call over all rows (the decision of row i depends on rows < i only). Returns int32
    [stop - start].
    """
    spa_arr, prob_arr = _check_similarity(spa, prob, window, mode, k, first_reference)
    prior = np.asarray(earlier, dtype=np.int64).reshape(-1)
    start = prior.size
    if not 0 <= start <= stop <= spa_arr.shape[1]:
        raise EsactError(f"similarity: rows [{start}, {stop}) outside the {spa_arr.shape[1]} rows")
    _check_earlier(prior)
    computed = [j for j in range(first_reference, start) if prior[j] == -1]
    rows = list(range(max(start, first_reference), stop))
    return _decide(spa_arr, prob_arr, window, threshold, mode, k, computed, rows, rows,
                   list(range(stop)), stop - start, start)


def _check_earlier(prior: np.ndarray) -> None:
    """Every earlier reuse-map entry is -1 or an earlier computed row."""
    for i, rep in enumerate(prior.tolist()):
        if rep != -1 and not (0 <= rep < i and prior[rep] == -1):
            raise EsactError(f"similarity: earlier reuse map entry {i} = {rep} is neither -1 nor "
                             f"an earlier computed row")


def _decide(spa: np.ndarray, prob: np.ndarray | None, window: int, threshold: float, mode: str,
            k: int, computed: list[int], positions: list[int], rows: list[int],
            row_of: list[int], count: int, start: int) -> np.ndarray:
    """The decision loop of `local_similarity_rows` over `rows` (global indices, each at
    `positions` in spa / prob; `computed`: the positions of the earlier computed rows, in
    order; `row_of`: position -> global row). Returns int32 [count], entry row - start."""
    decided = np.full(count, -1, dtype=np.int32)
    for at, i in zip(positions, rows):
        refs = computed[-window:] if window > 0 else []
        if refs:
            scores = _row_scores(spa, prob, at, refs, mode, k)
            # Reverse so argmax's first-max rule picks the most recent reference on ties.
            best = len(refs) - 1 - int(np.argmax(scores[::-1]))
            if scores[best] >= threshold:
                decided[i - start] = row_of[refs[best]]
                continue
        computed.append(at)
    return decided


SCORE_BOUND = 1.0 + 1e-9
"""Above every similarity score: an overlap fraction is at most 1 exactly, a cosine of
nonnegative prob rows at most 1 plus float64 rounding (a few ulps of 1)."""


def reuse_possible(window: int, threshold: float) -> bool:
    """Whether `_decide` can reuse any row: it needs a reference (window > 0) and a score >=
    threshold (scores never exceed SCORE_BOUND)."""
    return window > 0 and threshold <= SCORE_BOUND


def key_mask_of(spa: np.ndarray, reuse_map: np.ndarray) -> np.ndarray:
    """Per head, the keys that at least one computed row (reuse_map == -1) of SPA selects:
    bool [H, Lk] (the rows of SPA beyond len(reuse_map) are not read)."""
    spa_arr = np.asarray(spa, dtype=bool)
    rows = np.flatnonzero(np.asarray(reuse_map) == -1)
    return spa_arr[:, rows, :].any(axis=1)


def local_similarity(spa: np.ndarray, prob: np.ndarray | None, window: int, threshold: float,
                     mode: str, k: int, first_reference: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Reuse map and per-head key mask from the SPA mask (docs/design.md section 6 step 4).

    Rows are visited in order. Row i is compared with the last `window` COMPUTED rows before it
    (reused rows are never references; row 0 is always computed). Score = mean over heads of
    |SPA_i & SPA_j| / k (`overlap`) or of cos(prob_i, prob_j) (`cosprob`, prob = softmax(PAM)
    rows). If the best score >= threshold, row i reuses that row (ties: the nearest, i.e. most
    recent, computed row wins); otherwise it is computed and becomes a reference.
    `first_reference` r > 0 (not in docs/design.md; default 0 = the design) keeps rows 0..r-1
    computed and out of every window: special leading tokens ([CLS]) have outputs unlike any
    content token, even when their attention rows look alike.

    spa is [H, L, Lk] (Lk = L for self-attention). Returns (reuse_map int32 [L]: -1 for a
    computed row, else the representative's index; key_mask bool [H, Lk]: keys that at least one
    computed row's SPA selects, per head). `local_similarity_rows` decides a row chunk of the
    same map (the SIMILARITY instruction's progressive form).
    """
    spa_arr, prob_arr = _check_similarity(spa, prob, window, mode, k, first_reference)
    length = spa_arr.shape[1]
    reuse_map = local_similarity_rows(spa_arr, prob_arr, window, threshold, mode, k,
                                      first_reference, np.zeros(0, np.int64), length)
    return reuse_map, key_mask_of(spa_arr, reuse_map)


# ----------------------------------------------------------------------------- reference ring


def ring_slots(window: int, length: int) -> int:
    """Slots of the SIMILARITY reference ring: one per window row, at most one per row."""
    return max(1, min(window, length))


def ring_references(earlier: np.ndarray, first_reference: int, slots: int
                    ) -> list[tuple[int, int]]:
    """(row, ring slot) of the reference rows held in the ring after rows [0, len(earlier)):
    the last `slots` computed rows at or after `first_reference`; the j-th such row (counting
    from first_reference) sits in slot j mod slots, so the slot follows from the map alone."""
    computed = [j for j in range(first_reference, len(earlier)) if earlier[j] == -1]
    return [(row, j % slots) for j, row in enumerate(computed)][-slots:]


def local_similarity_ring(chunk_spa: np.ndarray, chunk_prob: np.ndarray | None,
                          ring: np.ndarray, window: int, threshold: float, mode: str, k: int,
                          first_reference: int, earlier: np.ndarray, length: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """`local_similarity_rows` for rows [start, start + n) (start = len(earlier)) when only
    those rows' SPA / prob rows are on chip (chunk_spa, chunk_prob [H, n, Lk]) and the earlier
    reference rows come from a ring of `ring_slots(window, length)` slots [slots, H, Lk]
    (`ring_references`: SPA rows for overlap, prob rows for cosprob). Returns (the chunk's
    map entries, the ring with the chunk's computed rows written into their slots). Deciding
    all chunks this way equals one `local_similarity` over all rows: a row's window only holds
    the last `window` computed rows, which are exactly the ring's rows and the chunk's."""
    spa_rows = np.asarray(chunk_spa, dtype=bool)
    heads, n, keys = spa_rows.shape
    prior = np.asarray(earlier, dtype=np.int64).reshape(-1)
    start, slots = prior.size, ring_slots(window, length)
    if ring.shape != (slots, heads, keys):
        raise EsactError(f"similarity: ring {ring.shape} is not [{slots}, {heads}, {keys}]")
    refs = ring_references(prior, first_reference, slots)
    # Only the references and the chunk's rows are read: they are stacked [refs, chunk] and
    # decided as `local_similarity_rows` decides the chunk (same values, same order).
    m = len(refs)
    compact_spa = np.zeros((heads, m + n, keys), dtype=bool)
    compact_spa[:, m:] = spa_rows
    compact_prob = None
    if mode == "cosprob":
        if chunk_prob is None:
            raise EsactError("similarity=cosprob needs the softmax of the predicted attention")
        compact_prob = np.zeros((heads, m + n, keys), dtype=np.float64)
        compact_prob[:, m:] = np.asarray(chunk_prob, dtype=np.float64)
    target = compact_spa if compact_prob is None else compact_prob
    for at, (_, slot) in enumerate(refs):
        target[:, at] = ring[slot]
    spa_arr, prob_arr = _check_similarity(compact_spa, compact_prob, window, mode, k,
                                          first_reference)
    _check_earlier(prior)
    rows = list(range(max(start, first_reference), start + n))
    decided = _decide(spa_arr, prob_arr, window, threshold, mode, k, list(range(m)),
                      [m + i - start for i in rows], rows,
                      [row for row, _ in refs] + list(range(start, start + n)), n, start)
    updated = ring.copy()
    rows_so_far = np.concatenate([prior, decided])
    source = spa_rows if compact_prob is None else np.asarray(chunk_prob)
    for row, slot in ring_references(rows_so_far, first_reference, slots):
        if row >= start:
            updated[slot] = source[:, row - start]
    return decided, updated
