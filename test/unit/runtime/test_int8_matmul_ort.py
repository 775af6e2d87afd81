"""onnxruntime's integer GEMM is used for INT8 products only where it is exact: the self-test
rejects a kernel that sums product pairs in saturating int16 (MLAS's uint8 x int8 kernel
without VNNI), and the products it accepts equal the int64 product, transposed and
row-selected operands included."""

from __future__ import annotations

import os

import numpy as np
import pytest
from esact_cc.runtime import int8_matmul_ort
from esact_cc.runtime.int8_gemm import exact_int8_product


class SaturatingPairs:
    """A MatMulInteger that adds each pair of uint8 x int8 products in saturating int16
    before the int32 sum, as x86's VPMADDUBSW does."""

    def run(self, _outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        a = feeds["A"].astype(np.int64)
        b = feeds["B"].astype(np.int64)
        k = a.shape[1]
        if k % 2:
            a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
        pairs = a[:, 0::2, None] * b[None, 0::2] + a[:, 1::2, None] * b[None, 1::2]
        total = np.clip(pairs, -32768, 32767).sum(axis=1) - 128 * b.sum(axis=0)
        return [total.astype(np.int32)]


class Exact:
    def run(self, _outputs: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        a = feeds["A"].astype(np.int64) - 128
        return [(a @ feeds["B"].astype(np.int64)).astype(np.int32)]


def test_the_self_test_rejects_a_saturating_kernel_and_accepts_an_exact_one() -> None:
    assert not int8_matmul_ort._self_test(SaturatingPairs())
    assert int8_matmul_ort._self_test(Exact())


def test_the_model_runs_and_products_are_exact_when_the_session_is_used() -> None:
    runner = int8_matmul_ort.session()
    if runner is None:
        pytest.skip("onnxruntime's integer GEMM is not exact on this machine")
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (40, 96), dtype=np.int8)
    k = rng.integers(-128, 128, (50, 96), dtype=np.int8)  # attention: a @ k.T
    a[::3] = 127
    got = exact_int8_product(a[::2], k.T)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a[::2].astype(np.int64) @ k.T.astype(np.int64))


def _child_product(_: int) -> tuple[bool, bool]:
    a = np.full((3, 40), 127, np.int8)
    b = np.full((40, 2), -128, np.int8)
    got = exact_int8_product(a, b)
    return int8_matmul_ort._session_pid == os.getpid(), bool((got == -127 * 128 * 40).all())


def test_a_forked_process_makes_its_own_session() -> None:
    import multiprocessing

    parent = int8_matmul_ort.session()
    if parent is None:
        pytest.skip("onnxruntime's integer GEMM is not exact on this machine")
    with multiprocessing.get_context("fork").Pool(1) as pool:
        own_session, exact = pool.map(_child_product, [0])[0]
    assert own_session and exact
    assert int8_matmul_ort._session is parent and int8_matmul_ort._session_pid == os.getpid()


class Failing:
    def run(self, _outputs: object, _feeds: object) -> list[np.ndarray]:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation\nmore")


def test_a_failing_session_is_one_error_line_and_never_used() -> None:
    from esact_cc.runtime.errors import ProgramError

    a, b = np.ones((2, 3), np.int8), np.ones((3, 4), np.int8)
    message = (r"^onnxruntime's integer GEMM failed on a \[2, 3\] x \[3, 4\] product: "
               r"\[ONNXRuntimeError\].*allocation$")
    with pytest.raises(ProgramError, match=message):
        int8_matmul_ort.product(Failing(), a, b)
    assert not int8_matmul_ort._self_test(Failing())
