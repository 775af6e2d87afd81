"""Exact INT8 matrix products: the functional model's GEMM and attention.

On onnxruntime's integer GEMM where it is exact on this machine (int8_matmul_ort.py: int32
results, 7-9x faster than float32 BLAS on BERT-base's tiles), else on float32 BLAS
(`float32_int8_product`): INT8 x INT8 products are at most 2^14 in magnitude, so any sum of at
most FLOAT32_EXACT_K of them is an integer float32 holds exactly, in whatever order BLAS adds;
it multiplies in float32 K blocks of that size and sums the blocks in float64 (exact: BERT's
K = 3072 FFN tiles stay under 2^26). Either result is the exact integer product, which the
caller stores straight into an INT32 array (every |sum| < 2^31: K < 2^16) or widens to int64
first when it adds a bias or an accumulator and wraps (issue 16: the int64 and int32 copies of
every product cost a tenth of the GEMM time).
"""

from __future__ import annotations

import numpy as np

from . import int8_matmul_ort

FLOAT32_EXACT_K = 1 << 10
"""Largest K whose float32 sums of int8 x int8 products are exact: K * 2^14 <= 2^24."""


def exact_int8_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of int8 matrices, the exact integer sums: int32 from onnxruntime's MatMulInteger
    when it is exact here, else floats (float32 when K fits one block, else float64)."""
    runner = int8_matmul_ort.session() if a.size and b.size else None
    if runner is not None and a.dtype == b.dtype == np.int8 and a.ndim == b.ndim == 2 \
            and a.shape[1] <= int8_matmul_ort.MAX_K:
        return int8_matmul_ort.product(runner, a, b)
    return float32_int8_product(a, b)


def float32_int8_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of int8 matrices as floats holding the exact integer sums (float32 when K fits
    one block, else float64), on float32 BLAS."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    k = a.shape[-1]
    product = np.matmul(a32[..., :FLOAT32_EXACT_K], b32[:FLOAT32_EXACT_K])
    if k > FLOAT32_EXACT_K:
        product = product.astype(np.float64)
        for start in range(FLOAT32_EXACT_K, k, FLOAT32_EXACT_K):
            end = start + FLOAT32_EXACT_K
            product += np.matmul(a32[..., start:end], b32[start:end])
    return product


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """An integer (or exactly integral float) array as int32, wrapping as INT32 adds do."""
    return x.astype(np.int64, copy=False).astype(np.int32)  # no copy of an int64 result
