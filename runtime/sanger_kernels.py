"""Numerics of Sanger's attention prediction and its pack-and-split, shared by the reference
interpreter (`sanger.predict_mask`) and the functional model (SANGER_PREDICT, SANGER_PACK), so
the compiled program's masks equal the interpreter's bit for bit.

Sanger (Lu et al., MICRO 2021; the authors' code: github.com/hatsu3/Sanger at commit 5d99ba3,
cited as file:line below) predicts each head's attention from low-bit Q and K, applies softmax
to the predicted scores and keeps the (query, key) positions whose predicted probability
exceeds a threshold:
- modeling_bert.py:277-289: scores = quant_matmul(Q, K^T) / sqrt(d_head), mask from them;
- quant_utils.py:23-36, 451-467: symmetric linear quantization to `bits`, levels
  +-(2^(bits-1) - 1), scale = that level / threshold (threshold: a calibrated max |x|, an EMA
  of it in training), round half to even (torch.round);
- modeling_sanger_spattn.py:82-84: probs = softmax(scores + attention mask), kept = probs > t;
- configs/bert_base_sanger_2e-3.json, _2e-2.json: bitwidth 4, thresholds 2e-3 and 2e-2.

Here Q and K reach the prediction as the INT8 codes the attention itself computes (per-tensor
calibrated scales, `quantize`), and the low-bit codes are re-quantized from them:
q_b = round(q8 * (2^(b-1) - 1) / 127). That is Sanger's quantizer with its threshold equal to
our calibrated max |Q| = 127 * q_scale (the EMA max in their training); the second rounding
is the price of reading the INT8 codes the MAC array already has instead of FP32 values.

Two choices of ours, not from the paper or code:
- a query row keeps at least its highest predicted key (lowest index on ties): Sanger adds
  -10000 to pruned scores, so a row with every key pruned falls back to a dense softmax, which
  a sparse array cannot do; an empty row here would give a zero output instead;
- `normalize_qk: inner_product` (their configs; modeling_sanger_spattn.py:103-116
  `quant_qk_matmul`: Q rows and K columns scaled to unit L2 norm before quantization, the
  product multiplied by both norms) is the option `normalize_qk`: here the INT8 code rows are
  scaled to unit norm and quantized to `bits` with threshold 1 (the largest |x| of a unit
  vector), and the low-bit product is multiplied by the two rows' norms in INT8 code units
  (`unit_codes`); the norms cost a norm unit on the prediction path (isa_sanger.py).

Pack-and-split (modeling_sanger_spattn.py:18-70, the authors' load-balance estimator, and
hardware/src/main/scala/pe_row/pack.scala): each query row of the mask is cut into segments
of `SANGER_PORTS` keys; an all-zero segment is skipped; a segment with n kept keys becomes
ceil(n / SANGER_PES_PER_SUBROW) sub-rows, each on one PE row of that many PEs, so the sparse
array runs sub-rows, not kept keys (`pack_and_split_subrows`).
"""

from __future__ import annotations

import numpy as np

INT8_LEVEL = 127
MIN_BITS, MAX_BITS = 2, 8
"""Low-bit widths: quant_utils.py:440 accepts 2, 4, 6, 8; 8 reuses the INT8 codes as they are."""
DEFAULT_BITS = 4
"""configs/bert_base_sanger_2e-3.json and _2e-2.json: quant_qk.bitwidth = 4."""
NORMALIZE_QK = ("none", "inner_product")
"""Sanger's `normalize_qk` values: off (its default) or unit-norm Q and K rows (its BERT
configs)."""
PAPER_THRESHOLDS = (2e-3, 2e-2)
"""The probability thresholds of the authors' configs (bert_base_sanger_2e-3 / _2e-2)."""
SANGER_PORTS = 64
"""Keys per mask segment: modeling_sanger_spattn.py:18, `num_ports=64`."""
SANGER_PES_PER_SUBROW = 16
"""PEs one sub-row occupies: modeling_sanger_spattn.py:18 `num_pes=16`; bench_sanger_v2.py:13
`NUM_PE_PER_ROW = 16` (a 64 x 16 PE array, bench_sanger_v2.py:12-13)."""


def level(bits: int) -> int:
    """The largest code of a `bits`-bit symmetric quantizer (quant_utils.py:28-30)."""
    return (1 << (bits - 1)) - 1


def requantize(codes: np.ndarray, bits: int) -> np.ndarray:
    """INT8 codes -> `bits`-bit codes: clip(round_half_even(c * level / 127)), int64."""
    top = level(bits)
    scaled = np.asarray(codes, np.float64) * (top / INT8_LEVEL)
    return np.clip(np.rint(scaled), -top, top).astype(np.int64)


def unit_codes(codes: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of INT8 codes scaled to unit L2 norm, quantized to `bits` with threshold 1
    (clip(round_half_even(u * level))), int64; and the rows' norms in INT8 code units, float64
    (0 for an all-zero row, whose unit codes are 0)."""
    c = np.asarray(codes, np.float64)
    norms = np.sqrt((c * c).sum(axis=1))
    unit = np.divide(c, norms[:, None], out=np.zeros_like(c), where=norms[:, None] > 0)
    top = level(bits)
    return np.clip(np.rint(unit * top), -top, top).astype(np.int64), norms


def score_scale(attention_scale: float, q_scale: float, k_scale: float, bits: int,
                normalize: bool = False) -> np.float32:
    """The float32 factor turning low-bit products into predicted logits: each low-bit step is
    127 / level INT8 steps (with `normalize`: 1 / level of a unit row, whose norm in INT8 steps
    multiplies the product separately), times the attention's own scale (1 / sqrt(d_head))."""
    step = (1.0 if normalize else INT8_LEVEL) / level(bits)
    return np.float32(np.float64(np.float32(q_scale)) * step * np.float64(np.float32(k_scale))
                      * step * np.float64(np.float32(attention_scale)))


def predicted_logits(q8: np.ndarray, k8: np.ndarray, bits: int, scale: np.float32,
                     normalize: bool = False) -> np.ndarray:
    """z = (q_b k_b^T) * scale, float64 [Lq, Lk]; with `normalize` the unit-norm codes'
    product times |q8_i| |k8_j| (Sanger's `normalize_qk: inner_product`)."""
    if not normalize:
        q_b, k_b = requantize(q8, bits), requantize(k8, bits)
        return (q_b @ k_b.T).astype(np.float64) * np.float64(scale)
    (q_b, q_norm), (k_b, k_norm) = unit_codes(q8, bits), unit_codes(k8, bits)
    return (q_b @ k_b.T).astype(np.float64) * np.float64(scale) * np.outer(q_norm, k_norm)


def predicted_probabilities(q8: np.ndarray, k8: np.ndarray, bits: int, scale: np.float32,
                            add_mask: np.ndarray | None, visible: np.ndarray | None,
                            normalize: bool = False) -> np.ndarray:
    """Softmax of the predicted logits of one head (`predicted_logits`), [Lq, Lk] float32
    (+ the additive mask, a row or a block), positions `visible` excludes get 0; in float64
    and rounded once to float32, as the SFU does."""
    z = predicted_logits(q8, k8, bits, scale, normalize)
    if add_mask is not None:
        z = z + np.asarray(add_mask, np.float32).astype(np.float64)
    if visible is not None:
        z = np.where(visible, z, -np.inf)
    peak = z.max(axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(z - peak)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0).astype(np.float32)


def threshold_mask(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Kept positions: probs > threshold (float32 compare), plus each row's top key."""
    keep = probs > np.float32(threshold)
    top = np.argmax(probs, axis=1)
    keep[np.arange(probs.shape[0]), top] |= probs[np.arange(probs.shape[0]), top] > 0
    return keep


def predict_mask(q8: np.ndarray, k8: np.ndarray, bits: int, scale: np.float32, threshold: float,
                 add_mask: np.ndarray | None = None, visible: np.ndarray | None = None,
                 normalize: bool = False) -> np.ndarray:
    """Sanger's per-query key mask of one head, [Lq, Lk] bool."""
    return threshold_mask(predicted_probabilities(q8, k8, bits, scale, add_mask, visible,
                                                  normalize), threshold)


def pack_and_split_subrows(mask: np.ndarray, ports: int = SANGER_PORTS,
                           pes: int = SANGER_PES_PER_SUBROW) -> int:
    """Sub-rows the sparse array runs for a [Lq, Lk] mask: per query row and `ports`-key
    segment with n > 0 kept keys, ceil(n / pes) (modeling_sanger_spattn.py:41-57)."""
    rows, keys = mask.shape
    padded = np.zeros((rows, -(-keys // ports) * ports), dtype=bool)
    padded[:, :keys] = mask != 0
    kept = padded.reshape(rows, -1, ports).sum(axis=2)
    return int((-(-kept // pes)).sum())
