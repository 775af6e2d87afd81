"""The softmax every SOFTMAX-family instruction and the INT8 interpreter compute: a running
(online) max and sum over fixed chunks of keys, so the result is the same bit for bit whether a
row is processed whole or in key blocks, and whether keys no query of a tile sees are present.

A row's logits z (float64) are folded left to right in chunks of `CHUNK` keys starting at key
0 (Milakov & Gimelshein, "Online normalizer calculation for softmax", 2018):

    m' = max(m, max of the chunk's valid z)
    s' = s * exp(m - m') + tree_sum(exp(z - m') over the chunk's valid keys)

with (m, s) = (-inf, 0) before the first chunk; tree_sum adds the chunk's 64 terms pairwise in
a fixed tree, missing and invalid keys counting as +0.0. Then p = exp(z - m) / s, rounded
once to float32; a row whose m is not finite (no valid key, +inf or NaN logits) is all 0.

Why this form: each step depends only on the chunk's values and the state, so
- key blocks whose first key is a multiple of CHUNK (SOFTMAX_STATS over each block, then
  SOFTMAX_NORM; `runtime/isa_online_softmax.py`) give the whole row's (m, s) exactly;
- a row cut short after its last valid key (causal attention skipping keys above the
  diagonal) gives the same (m, s): the cut-off chunks are all invalid, and a step over an
  all-invalid chunk leaves (m, s) unchanged (s * exp(0) + 0);
- numpy's own reduction order (pairwise, length-dependent) never enters.
"""

from __future__ import annotations

import numpy as np

CHUNK = 64
"""Keys per step of the running max and sum (an ISA constant, independent of the SFU lane
count of any config: key blocks start at multiples of it)."""

STATE_WORDS = 4
"""VBUF words per row of a spilled (m, s) state: two float64 values, each as its raw 8 bytes."""


def logits(src: np.ndarray, scale: float, add_row: np.ndarray | None) -> np.ndarray:
    """z = src * scale in float64 (FP32 inputs); with `add_row`, float32(z + add_row[c]): the
    ADD instruction's rounding, so a mask row added here and a per-query mask ADDed before
    give the same logits (they differ only where a row's every key is masked: with an
    unmasked key present, a masked key's exp underflows to 0 either way)."""
    # Widened first, multiplied in place (a float32 x float64 multiply runs numpy's buffered
    # casting loop); the product of two float32 values is exact in float64.
    z = np.array(np.asarray(src, np.float32), np.float64)
    z *= np.float64(np.float32(scale))
    if add_row is not None:  # the sum in float64, rounded to float32 on the way out
        rounded = np.add(z, np.asarray(add_row, np.float32), dtype=np.float64,
                         out=np.empty(z.shape, np.float32))
        z[...] = rounded
    return z


def initial_state(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, s) before any key: (-inf, 0) per row."""
    return np.full(rows, -np.inf), np.zeros(rows)


def _tree_sum(e: np.ndarray) -> np.ndarray:
    """Sums over the last axis, of at most CHUNK entries, added pairwise in a fixed tree
    (zeros padded)."""
    if e.shape[-1] < CHUNK:
        e = np.pad(e, ((0, 0),) * (e.ndim - 1) + ((0, CHUNK - e.shape[-1]),))
    width = CHUNK
    while width > 1:
        width //= 2
        e = e[..., :width] + e[..., width:2 * width]
    return e[..., 0]


def _tree_leading(combine: np.ufunc, keys_first: np.ndarray) -> np.ndarray:
    """`combine` over the leading axis of [CHUNK, ...] (a chunk's keys) in _tree_sum's tree
    (entry i with entry i + width, width halving from CHUNK / 2), every step on contiguous
    halves instead of one short strided loop per chunk."""
    width = CHUNK // 2
    acc = combine(keys_first[:width], keys_first[width:])
    while width > 1:
        width //= 2
        combine(acc[:width], acc[width:2 * width], out=acc[:width])
    return acc[0]


def _chunk_maxima(blocks: np.ndarray, cols: int) -> np.ndarray:
    """Each chunk's max of blocks [rows, chunks, CHUNK], the last over its `cols` keys only,
    not its -inf padding: which signed zero numpy's max returns depends on the length it
    reduces, and the step form reduces the unpadded chunk."""
    maxima = blocks.max(axis=2)
    tail = cols - (blocks.shape[1] - 1) * CHUNK
    if tail < CHUNK:
        maxima[:, -1] = blocks[:, -1, :tail].max(axis=1)
    return maxima


def fold(z: np.ndarray, valid: np.ndarray | None, m: np.ndarray, s: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """Fold the keys of z [rows, cols] (the first at a multiple of CHUNK) into (m, s).

    Every chunk's elementwise work at once (issue 16: a step per chunk cost 30 numpy calls);
    only s's recurrence runs chunk by chunk. Same operations per element as the step form, so
    the same bits: the running max is np.maximum.accumulate, and the last chunk is padded with
    -inf keys, which leave its max alone and add exp(-inf) = 0.

    The chunk maxima, exponentials and tree sums run on a keys-first copy [CHUNK, rows,
    chunks] (issue 16: reductions over the 64 keys of [rows, chunks, 64] ran one short strided
    loop per chunk; BERT-base's 128 x 512 tile 0.63 -> 0.25 ms). Which NaN or which signed
    zero a max or a sum returns depends on the order of its operands, and m and s are stored
    (SOFTMAX_STATS): a tile whose chunk maxima hold a NaN or a zero is folded in the
    [rows, chunks, CHUNK] layout, as before. Otherwise no sum meets a NaN and each chunk's
    max is one value whichever order finds it, so both layouts give the same bits."""
    rows, cols = z.shape
    chunks = -(-cols // CHUNK)
    if chunks == 0:
        return m, s
    if valid is None and cols == chunks * CHUNK:
        blocks = z.reshape(rows, chunks, CHUNK)
    else:
        padded = np.full((rows, chunks * CHUNK), -np.inf)
        if valid is None:
            padded[:, :cols] = z
        else:
            np.copyto(padded[:, :cols], z, where=valid)
        blocks = padded.reshape(rows, chunks, CHUNK)
    # A copy (worked on in place below) even where the transpose is contiguous (one chunk).
    keys_first = blocks.reshape(rows * chunks, CHUNK).T.copy().reshape(CHUNK, rows, chunks)
    maxima = _tree_leading(np.maximum, keys_first)
    order_matters = bool(np.isnan(maxima).any()) or not maxima.all()
    with np.errstate(invalid="ignore", over="ignore"):
        running = np.empty((rows, chunks + 1))  # running[:, c]: m before chunk c
        running[:, 0] = m
        running[:, 1:] = _chunk_maxima(blocks, cols) if order_matters else maxima
        np.maximum.accumulate(running, axis=1, out=running)
        before, after = running[:, :-1], running[:, 1:]
        base = np.where(np.isfinite(after), after, 0.0)
        if order_matters:
            exps = blocks - base[:, :, None]
            np.exp(exps, out=exps)  # invalid keys: exp(-inf) = 0
            sums = _tree_sum(exps)
        else:
            keys_first -= base
            np.exp(keys_first, out=keys_first)
            sums = _tree_leading(np.add, keys_first)
        rescale = np.where(np.isfinite(before), np.exp(before - base), 0.0)
        for c in range(chunks):
            s = s * rescale[:, c] + sums[:, c]
    return running[:, -1].copy(), s


def normalize(z: np.ndarray, valid: np.ndarray | None, m: np.ndarray, s: np.ndarray
              ) -> np.ndarray:
    """p = exp(z - m) / s rounded to float32; invalid keys and rows without a finite m are 0."""
    ok = np.isfinite(m) & (s > 0)
    keep = ok[:, None] if valid is None else valid & ok[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        e = z - np.where(ok, m, 0.0)[:, None]
        np.exp(e, out=e)
        if valid is not None or not ok.all():
            np.copyto(e, 0.0, where=~keep)
        e /= np.where(ok, s, 1.0)[:, None]
    return e.astype(np.float32)


def softmax(z: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """The whole-row softmax of z [rows, cols] (float64 logits): fold all keys, normalize."""
    m, s = fold(z, valid, *initial_state(z.shape[0]))
    return normalize(z, valid, m, s)


def pack_state(m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(m, s) as [rows, STATE_WORDS] float32 words holding the float64 bits (VBUF layout)."""
    return np.ascontiguousarray(np.stack([m, s], axis=1), np.float64).view(np.float32)


def unpack_state(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (m, s) `pack_state` stored."""
    state = np.ascontiguousarray(words, np.float32).view(np.float64)
    return state[:, 0].copy(), state[:, 1].copy()
