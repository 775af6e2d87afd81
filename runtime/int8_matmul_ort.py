"""INT8 x INT8 -> INT32 products on onnxruntime's integer GEMM (MatMulInteger).

onnxruntime's MLAS multiplies uint8 x int8 with the CPU's integer dot-product instructions
(AVX512-VNNI / AVX-VNNI on x86, udot / sdot on ARM): BERT-base's 512 x 768 x 128 GEMM tile takes
0.16 ms on one core where float32 BLAS takes 1.2 ms (issue 16). An int8 operand `a` is fed as
uint8 `a + 128` (its bits with the sign bit flipped) with MatMulInteger's a_zero_point 128,
so the product is (a + 128 - 128) @ b: every step is integer arithmetic in int32, exact while
K * 255 * 128 < 2^31 (K <= `MAX_K`).

Exact, that is, when MLAS's kernel is: without VNNI its x86 uint8 x int8 kernel sums pairs of
products in saturating int16 (VPMADDUBSW), which is wrong where a pair exceeds 32767. So the
session is used only after `_self_test` has found it exact on products that saturate such a
kernel (every pair 255 x 127 or 255 x -128) in the shapes that select MLAS's kernels (one row,
one column, short and long K, odd sizes); otherwise, or without a usable onnxruntime,
`session()` is None and int8_gemm.py multiplies in float32 BLAS, with the same results.

The model is written at the protobuf wire level (host_model_tables.py's encoders), so the
run path imports onnxruntime but never onnx: ModelProto ir_version = 1, graph = 7,
opset_import = 8; GraphProto node = 1, name = 2, initializer = 5, input = 11, output = 12;
NodeProto input = 1, output = 2, op_type = 4; TensorProto data_type = 2, name = 8, raw_data = 9;
ValueInfoProto name = 1, type = 2 (TypeProto tensor_type = 1: elem_type = 1, shape = 2;
TensorShapeProto dim = 1, Dimension dim_param = 2).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np

from .errors import ProgramError
from .host_model_tables import _bytes_field, _varint_field

MAX_K = 1 << 16
"""K up to which every int32 partial sum of uint8 x int8 products is exact: K * 255 * 128."""

_UINT8, _INT8, _INT32 = 2, 3, 6  # TensorProto.DataType
_unset = object()
_session: Any = _unset
_session_pid = 0  # a forked child (sweep workers) makes its own session, never the parent's


def _tensor_type(elem_type: int, dims: tuple[str, ...]) -> bytes:
    shape = b"".join(_bytes_field(1, _bytes_field(2, d.encode())) for d in dims)
    return _bytes_field(1, _varint_field(1, elem_type) + _bytes_field(2, shape))


def _value_info(name: str, elem_type: int, dims: tuple[str, ...]) -> bytes:
    return _bytes_field(1, name.encode()) + _bytes_field(2, _tensor_type(elem_type, dims))


def matmul_integer_model() -> bytes:
    """Y[M, N] int32 = MatMulInteger(A[M, K] uint8, B[K, N] int8, a_zero_point = 128)."""
    zero_point = (_varint_field(2, _UINT8) + _bytes_field(8, b"a_zero_point")
                  + _bytes_field(9, b"\x80"))
    node = (b"".join(_bytes_field(1, name) for name in (b"A", b"B", b"a_zero_point"))
            + _bytes_field(2, b"Y") + _bytes_field(4, b"MatMulInteger"))
    graph = (_bytes_field(1, node) + _bytes_field(2, b"int8_product")
             + _bytes_field(5, zero_point)
             + _bytes_field(11, _value_info("A", _UINT8, ("M", "K")))
             + _bytes_field(11, _value_info("B", _INT8, ("K", "N")))
             + _bytes_field(12, _value_info("Y", _INT32, ("M", "N"))))
    opset = _bytes_field(1, b"") + _varint_field(2, 13)
    return _varint_field(1, 8) + _bytes_field(7, graph) + _bytes_field(8, opset)


def session() -> Any:
    """The MatMulInteger session, created and self-tested on first use; None when
    onnxruntime cannot give exact products here."""
    global _session, _session_pid
    if _session is _unset or _session_pid != os.getpid():
        _session, _session_pid = _create(), os.getpid()
        if _session is not None and not _self_test(_session):
            _session = None
    return _session


def _create() -> Any:
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only
        options.intra_op_num_threads = 1  # the caller's thread: CPU time is the process's
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return ort.InferenceSession(matmul_integer_model(), sess_options=options,
                                        providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - no usable onnxruntime: float32 BLAS computes the same
        return None


def product(runner: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of int8 matrices (K <= MAX_K) as int32, exact on a self-tested session; a
    failure of the session (out of memory) is one ProgramError line."""
    unsigned = np.bitwise_xor(a.view(np.uint8), np.uint8(0x80))  # a + 128, contiguous
    try:
        return runner.run(None, {"A": unsigned, "B": np.ascontiguousarray(b)})[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        text = str(exc).strip().splitlines()
        raise ProgramError(f"onnxruntime's integer GEMM failed on a {list(a.shape)} x "
                           f"{list(b.shape)} product: {text[0] if text else type(exc).__name__}"
                           ) from None


_SHAPES = ((1, 1, 1), (1, 64, 16), (2, 17, 3), (3, 256, 1), (7, 300, 33), (16, 64, 64),
           (5, 3072, 7), (65, 128, 70))
"""(M, K, N) of the self-test: one row / one column (MLAS's GEMV paths), odd and long K."""


def _scrambled_int8(shape: tuple[int, int], seed: int) -> np.ndarray:
    """int8 values spread over -128..127: the top byte of Knuth's multiplicative hash of each
    index (no numpy.random, whose import cost every run 6 ms)."""
    index = np.arange(shape[0] * shape[1], dtype=np.uint32) + np.uint32(seed << 20)
    return ((index * np.uint32(2654435761)) >> 24).astype(np.uint8).view(np.int8).reshape(shape)


def _self_test(runner: Any) -> bool:
    """Exact on every _SHAPES product of extremes (pairs saturating int16) and scrambled
    values."""
    for seed, (m, k, n) in enumerate(_SHAPES):
        for extreme in (127, -128):
            a = _scrambled_int8((m, k), 2 * seed)
            b = _scrambled_int8((k, n), 2 * seed + 1)
            a[: (m + 1) // 2] = 127  # a + 128 = 255
            b[:, : (n + 1) // 2] = extreme
            try:
                got = product(runner, a, b)
            except ProgramError:  # a session that cannot run is not used
                return False
            want = np.matmul(a, b, dtype=np.int64)
            if got.dtype != np.int32 or got.shape != want.shape or not (got == want).all():
                return False
    return True
