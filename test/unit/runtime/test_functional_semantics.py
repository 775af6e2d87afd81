"""Every instruction's semantics against an independent numpy reference (incl. edge cases)."""

from __future__ import annotations

from instruction_machine import CFG, get, machine_for, put
import math

import numpy as np
import onnx
import pytest
from esact_cc.runtime.errors import ProgramError
from esact_cc.runtime.esb import (
    HostSegment,
    IODescriptor,
    Program,
    TensorDesc,
)
from esact_cc.runtime.functional import Machine, execute
from esact_cc.runtime.isa import Buffer, Instruction, Work
from onnx import TensorProto, helper

RNG = np.random.default_rng(1234)




def run(instr: Instruction, m: Machine | None = None) -> tuple[Machine, Work]:
    m = m or machine_for(instr)
    return m, m.step(0, instr)


def int8(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(-128, 128, shape).astype(np.int8)


def f32(shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- DMA


@pytest.mark.parametrize("buf", list(Buffer))
def test_load_store_strided_all_buffers(buf: Buffer) -> None:
    dtype = {Buffer.WBUF: np.int8, Buffer.ABUF: np.int8, Buffer.ACC: np.int32,
             Buffer.VBUF: np.float32, Buffer.MBUF: np.uint8}[buf]
    full = RNG.integers(-100, 100, (5, 9)).astype(dtype)  # DRAM matrix, take columns 2..6
    load = Instruction.make("load", buf=buf, sram_addr=7, dram_addr=100, rows=5, cols=4,
                            sram_stride=6, dram_stride=9 * full.itemsize)
    m = machine_for(load)
    raw = full.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    m.dram[100 - 2 * full.itemsize:100 - 2 * full.itemsize + len(raw)] = np.frombuffer(raw,
                                                                                      np.uint8)
    m.step(0, load)
    expected = full[:, 2:6]
    np.testing.assert_array_equal(get(m, buf, 7, 5, 4, 6), expected)
    store = Instruction.make("store", buf=buf, sram_addr=7, dram_addr=4000, rows=5, cols=4,
                             sram_stride=6)
    work = m.step(0, store)
    back = np.frombuffer(m.dram[4000:4000 + expected.nbytes].tobytes(),
                         np.dtype(dtype).newbyteorder("<")).reshape(5, 4)
    np.testing.assert_array_equal(back, expected)
    assert work.dram_write_bytes == expected.nbytes


# ----------------------------------------------------------------------------- GEMM


def gemm_ref(a, w, acc0, bias, rows, cols, accumulate):
    out = acc0.astype(np.int64).copy()
    full = a.astype(np.int64) @ w.astype(np.int64)
    if bias is not None:
        full = full + bias.astype(np.int64)
    if accumulate:
        full = full + acc0.astype(np.int64)
    for i in rows:
        for j in cols:
            out[i, j] = full[i, j]
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


@pytest.mark.parametrize("mask_kind", ["none", "empty", "full", "random", "one_row",
                                       "rows_only", "cols_only"])
@pytest.mark.parametrize("accumulate", [0, 1])
def test_gemm_masks_bias_strides(mask_kind: str, accumulate: int) -> None:
    m_, k_, n_ = (1, 20, 9) if mask_kind == "one_row" else (6, 20, 9)
    a_full, w_full = int8((m_, k_ + 3)), int8((k_, n_ + 5))
    a, w = a_full[:, 3:], w_full[:, :n_]
    bias = RNG.integers(-1000, 1000, n_).astype(np.int32)
    acc0 = RNG.integers(-10**6, 10**6, (m_, n_ + 2)).astype(np.int32)
    random_rows, random_cols = np.array([1, 0, 1, 1, 0, 1]), RNG.integers(0, 2, n_)
    row_mask = {"none": np.ones(m_), "empty": np.zeros(m_), "full": np.ones(m_),
                "random": random_rows, "one_row": np.ones(m_), "rows_only": random_rows,
                "cols_only": np.ones(m_)}[mask_kind]
    col_mask = {"none": np.ones(n_), "empty": np.zeros(n_), "full": np.ones(n_),
                "random": random_cols, "one_row": np.ones(n_), "rows_only": np.ones(n_),
                "cols_only": random_cols}[mask_kind]
    has_rows = int(mask_kind not in ("none", "one_row", "cols_only"))
    has_cols = int(mask_kind not in ("none", "one_row", "rows_only"))
    instr = Instruction.make(
        "gemm", acc_addr=10, a_addr=3, w_addr=0, m=m_, k=k_, n=n_, a_stride=k_ + 3,
        w_stride=n_ + 5, acc_stride=n_ + 2, accumulate=accumulate, has_bias=1, bias_addr=500,
        has_row_mask=has_rows, row_mask_addr=0, has_col_mask=has_cols, col_mask_addr=100)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, a_full)
    put(m, Buffer.WBUF, 0, w_full)
    put(m, Buffer.ACC, 10, acc0)
    put(m, Buffer.ACC, 500, bias)
    put(m, Buffer.MBUF, 0, row_mask.astype(np.uint8))
    put(m, Buffer.MBUF, 100, col_mask.astype(np.uint8) * 7)  # any nonzero byte selects
    _, work = run(instr, m)
    rows = np.flatnonzero(row_mask) if has_rows else range(m_)
    cols = np.flatnonzero(col_mask) if has_cols else range(n_)
    expected = gemm_ref(a, w, acc0[:, :n_], bias, rows, cols, accumulate)
    got = get(m, Buffer.ACC, 10, m_, n_ + 2)
    np.testing.assert_array_equal(got[:, :n_], expected)
    np.testing.assert_array_equal(got[:, n_:], acc0[:, n_:])  # stride gap untouched
    assert work.macs_dense == m_ * k_ * n_
    assert work.macs_executed == len(list(rows)) * len(list(cols)) * k_


def test_gemm_large_k_float64_path_and_int32_wraparound() -> None:
    k_ = 1500  # > 1024: float64 path
    a = np.full((2, k_), -128, np.int8)
    w = np.full((k_, 3), -128, np.int8)
    instr = Instruction.make("gemm", acc_addr=0, a_addr=0, w_addr=0, m=2, k=k_, n=3,
                             accumulate=1)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, a)
    put(m, Buffer.WBUF, 0, w)
    put(m, Buffer.ACC, 0, np.full(6, 2**31 - 1, np.int32))
    run(instr, m)
    exact = (k_ * 128 * 128 + 2**31 - 1 + 2**31) % 2**32 - 2**31
    np.testing.assert_array_equal(get(m, Buffer.ACC, 0, 2, 3), np.full((2, 3), exact))


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("mask_kind", ["none", "empty", "full", "random"])
@pytest.mark.parametrize("lq", [1, 5])
def test_attn_qk_per_head_strided(mask_kind: str, lq: int) -> None:
    lk, d, heads = 7, 4, 3
    q_all, k_all = int8((lq, d * heads)), int8((lk, d * heads))
    h = 1
    mask = {"none": np.ones((lq, lk)), "empty": np.zeros((lq, lk)), "full": np.ones((lq, lk)),
            "random": RNG.integers(0, 2, (lq, lk))}[mask_kind].astype(np.uint8)
    instr = Instruction.make("attn_qk", scores_addr=0, q_addr=h * d, k_addr=1000 + h * d,
                             lq=lq, lk=lk, d=d, q_stride=d * heads, k_stride=d * heads,
                             has_mask=int(mask_kind != "none"), mask_addr=50)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, q_all)
    put(m, Buffer.ABUF, 1000, k_all)
    put(m, Buffer.MBUF, 50, mask)
    put(m, Buffer.ACC, 0, np.full(lq * lk, 99, np.int32))
    _, work = run(instr, m)
    q, k = q_all[:, h * d:(h + 1) * d].astype(np.int64), k_all[:, h * d:(h + 1) * d]
    expected = np.where(mask != 0, q @ k.T.astype(np.int64), 0)
    np.testing.assert_array_equal(get(m, Buffer.ACC, 0, lq, lk), expected)
    assert work.macs_executed == int((mask != 0).sum()) * d


@pytest.mark.parametrize("row_kind", ["none", "empty", "random"])
def test_attn_pv_masks_accumulate(row_kind: str) -> None:
    lq, lk, d = 5, 6, 8
    p, v = RNG.integers(0, 128, (lq, lk)).astype(np.int8), int8((lk, d + 8))
    emask = RNG.integers(0, 2, (lq, lk)).astype(np.uint8)
    rmask = {"none": np.ones(lq), "empty": np.zeros(lq),
             "random": np.array([1, 0, 1, 1, 0])}[row_kind].astype(np.uint8)
    out0 = RNG.integers(-50, 50, (lq, d)).astype(np.int32)
    instr = Instruction.make("attn_pv", out_addr=0, p_addr=0, v_addr=100 + 8, lq=lq, lk=lk,
                             d=d, v_stride=d + 8, accumulate=1, has_mask=1, mask_addr=0,
                             has_row_mask=int(row_kind != "none"), row_mask_addr=200)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, p)
    put(m, Buffer.ABUF, 100, v)
    put(m, Buffer.MBUF, 0, emask)
    put(m, Buffer.MBUF, 200, rmask)
    put(m, Buffer.ACC, 0, out0)
    run(instr, m)
    full = out0 + np.where(emask != 0, p, 0).astype(np.int64) @ v[:, 8:].astype(np.int64)
    expected = np.where(rmask[:, None] != 0, full, out0)
    np.testing.assert_array_equal(get(m, Buffer.ACC, 0, lq, d), expected)


# ----------------------------------------------------------------------------- SFU


def test_dequant_scale_bias_scalars() -> None:
    src = RNG.integers(-10**6, 10**6, (3, 5)).astype(np.int32)
    scale, bias, scalars = f32((5,)), f32((5,)), np.array([0.5, 3.25], np.float32)
    instr = Instruction.make("dequant", dst_addr=0, src_addr=0, rows=3, cols=5, scale_addr=100,
                             has_bias=1, bias_addr=200, scalar_count=2, scalar_addr=300)
    m = machine_for(instr)
    put(m, Buffer.ACC, 0, src)
    put(m, Buffer.VBUF, 100, scale)
    put(m, Buffer.VBUF, 200, bias)
    put(m, Buffer.VBUF, 300, scalars)
    run(instr, m)
    expected = (src.astype(np.float64) * scale.astype(np.float64) * (0.5 * 3.25)
                + bias.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 0, 3, 5), expected)


def test_requant_round_half_even_clip_nan() -> None:
    src = np.array([[1, 3, 5, -1, -3, 1000, -1000, 7]], np.int32)
    mult = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, np.nan], np.float32)
    instr = Instruction.make("requant", dst_addr=4, src_addr=0, rows=1, cols=8, mult_addr=0)
    m = machine_for(instr)
    put(m, Buffer.ACC, 0, src)
    put(m, Buffer.VBUF, 0, mult)
    run(instr, m)
    np.testing.assert_array_equal(get(m, Buffer.ABUF, 4, 1, 8),
                                  [[0, 2, 2, 0, -2, 127, -127, 0]])


def test_quant_immediate_multiplier() -> None:
    src = f32((4, 6), 3.0)
    instr = Instruction.make("quant", dst_addr=0, src_addr=0, rows=4, cols=6, mult=12.5)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, src)
    run(instr, m)
    expected = np.clip(np.rint(src.astype(np.float64) * 12.5), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(get(m, Buffer.ABUF, 0, 4, 6), expected)


def softmax_ref(x, scale, add, valid):
    out = np.zeros(x.shape)
    for r in range(x.shape[0]):
        idx = [c for c in range(x.shape[1]) if valid[r, c]]
        if not idx:
            continue
        z = np.array([x[r, c] * scale + (add[c] if add is not None else 0.0) for c in idx])
        e = np.exp(z - z.max())
        out[r, idx] = e / e.sum()
    return out.astype(np.float32)


@pytest.mark.parametrize("case", ["plain", "add_mask", "causal", "elem_empty_row", "one_row"])
def test_softmax(case: str) -> None:
    rows = 1 if case == "one_row" else 4
    cols = 6
    x = f32((rows, cols), 2.0)
    add = np.array([0, 0, -1e4, 0, 0, -np.inf], np.float32) if case == "add_mask" else None
    valid = np.ones((rows, cols), bool)
    if case == "causal":
        valid = np.arange(cols)[None, :] <= np.arange(rows)[:, None] + 1
    emask = RNG.integers(0, 2, (rows, cols)).astype(np.uint8)
    if case == "elem_empty_row":
        emask[2] = 0
        valid = emask != 0
    instr = Instruction.make(
        "softmax", dst_addr=0, src_addr=100, rows=rows, cols=cols, src_stride=10, scale=0.7,
        has_add_mask=int(add is not None), add_mask_addr=500, causal=int(case == "causal"),
        causal_offset=1, has_elem_mask=int(case == "elem_empty_row"), elem_mask_addr=0)
    m = machine_for(instr)
    for r in range(rows):
        put(m, Buffer.VBUF, 100 + 10 * r, x[r])
    if add is not None:
        put(m, Buffer.VBUF, 500, add)
    put(m, Buffer.MBUF, 0, emask)
    run(instr, m)
    expected = softmax_ref(x.astype(np.float64), float(np.float32(0.7)), add, valid)
    np.testing.assert_allclose(get(m, Buffer.VBUF, 0, rows, cols), expected, rtol=1e-6,
                               atol=1e-7)
    if case == "elem_empty_row":
        assert not get(m, Buffer.VBUF, 0, rows, cols)[2].any()


def test_layernorm() -> None:
    x, gamma, beta = f32((3, 16), 4.0), f32((16,)), f32((16,))
    instr = Instruction.make("layernorm", dst_addr=0, src_addr=100, rows=3, cols=16,
                             gamma_addr=200, beta_addr=300, eps=1e-5)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 100, x)
    put(m, Buffer.VBUF, 200, gamma)
    put(m, Buffer.VBUF, 300, beta)
    run(instr, m)
    xd = x.astype(np.float64)
    mu = xd.mean(1, keepdims=True)
    sd = np.sqrt(xd.var(1, keepdims=True) + float(np.float32(1e-5)))
    np.testing.assert_allclose(get(m, Buffer.VBUF, 0, 3, 16), (xd - mu) / sd * gamma + beta,
                               rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("mode", ["ERF", "TANH"])
def test_gelu(mode: str) -> None:
    x = f32((2, 50), 3.0)
    instr = Instruction.make("gelu", dst_addr=0, src_addr=200, rows=2, cols=50,
                             mode=0 if mode == "ERF" else 1)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 200, x)
    run(instr, m)
    xd = x.astype(np.float64)
    if mode == "ERF":
        special = pytest.importorskip("scipy.special")
        expected = 0.5 * xd * (1 + special.erf(xd / math.sqrt(2)))
    else:
        expected = 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
    np.testing.assert_allclose(get(m, Buffer.VBUF, 0, 2, 50), expected, rtol=1e-6, atol=1e-7)


def test_add_in_place_strided() -> None:
    a, b = f32((3, 4)), f32((3, 8))
    instr = Instruction.make("add", dst_addr=0, a_addr=0, b_addr=100, rows=3, cols=4,
                             b_stride=8)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, a)
    put(m, Buffer.VBUF, 100, b)
    run(instr, m)
    np.testing.assert_array_equal(get(m, Buffer.VBUF, 0, 3, 4),
                                  (a.astype(np.float64) + b[:, :4]).astype(np.float32))


REUSE = np.array([-1, 0, -1, 2, 0, -1], np.int16)  # rows 0, 2, 5 computed


@pytest.mark.parametrize("buf", [Buffer.VBUF, Buffer.ACC, Buffer.ABUF])
def test_gather_then_scatter_rows(buf: Buffer) -> None:
    src = RNG.integers(-100, 100, (6, 3)).astype(
        {Buffer.VBUF: np.float32, Buffer.ACC: np.int32, Buffer.ABUF: np.int8}[buf])
    gather = Instruction.make("gather_rows", buf=buf, dst_addr=100, src_addr=0, rows=6, cols=3,
                              map_addr=10)
    m = machine_for(gather)
    put(m, buf, 0, src)
    put(m, Buffer.MBUF, 10, REUSE.astype("<i2").view(np.uint8))
    run(gather, m)
    np.testing.assert_array_equal(get(m, buf, 100, 3, 3), src[[0, 2, 5]])
    compact = Instruction.make("scatter_rows", buf=buf, dst_addr=200, src_addr=100, rows=6,
                               cols=3, map_addr=10, compact=1)
    m.step(0, compact)
    expected = src[[0, 0, 2, 2, 0, 5]]
    np.testing.assert_array_equal(get(m, buf, 200, 6, 3), expected)
    direct = Instruction.make("scatter_rows", buf=buf, dst_addr=300, src_addr=0, rows=6,
                              cols=3, map_addr=10)
    m.step(0, direct)
    np.testing.assert_array_equal(get(m, buf, 300, 6, 3), expected)


def test_bad_reuse_map_names_instruction_and_field() -> None:
    instr = Instruction.make("scatter_rows", buf=Buffer.VBUF, dst_addr=0, src_addr=0, rows=3,
                             cols=1, map_addr=0)
    m = machine_for(instr)
    put(m, Buffer.MBUF, 0, np.array([-1, 2, -1], "<i2").view(np.uint8))
    with pytest.raises(ProgramError, match=r"instruction 0 \(scatter_rows\): field 'map_addr'"):
        run(instr, m)


# ----------------------------------------------------------------------------- SPLS


def hlog_levels_ref(bits: int) -> list[int]:
    levels = {0}
    for i in range(bits):
        levels.add(1 << i)
    for i in range(bits - 2):
        levels.add((1 << i) + (1 << (i + 1)))
    return sorted(levels)


def hlog_ref(x: np.ndarray, bits: int, scale: float) -> np.ndarray:
    levels = hlog_levels_ref(bits)
    out = np.zeros(x.shape, np.int64)
    for idx, v in np.ndenumerate(x.astype(np.float64)):
        mag = abs(v) / scale
        best = min(levels, key=lambda lv: (abs(lv - mag), lv))  # ties -> lower level
        out[idx] = int(math.copysign(best, v)) if best else 0
    return out


@pytest.mark.parametrize("dynamic", [0, 1])
def test_hlog(dynamic: int) -> None:
    x = f32((3, 7), 5.0)
    bits = 5
    instr = Instruction.make("hlog", dst_buf=Buffer.ABUF, dst_addr=10, src_addr=0, rows=3,
                             cols=7, bits=bits, scale=0.25, dynamic=dynamic,
                             scale_out_addr=500)
    m = machine_for(instr)
    put(m, Buffer.VBUF, 0, x)
    run(instr, m)
    scale = float(np.float32(np.abs(x).max() / 2 ** (bits - 1))) if dynamic else 0.25
    np.testing.assert_array_equal(get(m, Buffer.ABUF, 10, 3, 7), hlog_ref(x, bits, scale))
    if dynamic:
        assert m.buffers[Buffer.VBUF][500] == np.float32(scale)


@pytest.mark.parametrize("transpose_b", [0, 1])
def test_bpu_shift_add_product(transpose_b: int) -> None:
    levels = np.array(hlog_levels_ref(6))
    a = RNG.choice(levels, (4, 9)) * RNG.choice([-1, 1], (4, 9))
    b = RNG.choice(levels, (9, 5)) * RNG.choice([-1, 1], (9, 5))
    stored_b = b.T.copy() if transpose_b else b
    instr = Instruction.make("bpu", dst_addr=0, a_buf=Buffer.ABUF, a_addr=0,
                             b_buf=Buffer.ACC, b_addr=1000, m=4, k=9, n=5,
                             transpose_b=transpose_b)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 0, a.astype(np.int8))
    put(m, Buffer.ACC, 1000, stored_b.astype(np.int32))
    _, work = run(instr, m)
    np.testing.assert_array_equal(get(m, Buffer.ACC, 0, 4, 5), a @ b)
    def terms(v):
        return abs(int(v)).bit_count()
    expected_adds = sum(terms(a[i, kk]) * terms(b[kk, j])
                        for i in range(4) for kk in range(9) for j in range(5))
    assert work.shift_adds == expected_adds


def test_bpu_rejects_non_hlog_operand() -> None:
    instr = Instruction.make("bpu", dst_addr=0, a_buf=Buffer.ABUF, a_addr=0, b_buf=Buffer.ABUF,
                             b_addr=100, m=1, k=1, n=1)
    m = machine_for(instr)
    put(m, Buffer.ABUF, 100, np.array([5], np.int8))  # 5 = 0b101 is not an HLog level
    with pytest.raises(ProgramError, match=r"instruction 0 \(bpu\): field 'b_addr'"):
        run(instr, m)


def topk_ref(scores, k, valid):
    out = np.zeros(scores.shape, bool)
    for r in range(scores.shape[0]):
        cand = sorted((c for c in range(scores.shape[1]) if valid[r, c]),
                      key=lambda c: (-scores[r, c], c))
        out[r, cand[:k]] = True
    return out


@pytest.mark.parametrize("case", ["plain", "k_equals_l", "one_row", "key_mask", "causal",
                                  "empty_key_mask", "ties"])
def test_topk(case: str) -> None:
    rows = 1 if case == "one_row" else 5
    cols, k = 8, (8 if case == "k_equals_l" else 3)
    scores = RNG.integers(-20, 20, (rows, cols)).astype(np.int32)
    if case == "ties":
        scores[:] = 7
    keys = np.ones(cols, np.uint8)
    if case == "key_mask":
        keys = np.array([1, 0, 1, 1, 0, 1, 1, 1], np.uint8)
    if case == "empty_key_mask":
        keys[:] = 0
    valid = np.broadcast_to(keys != 0, (rows, cols)).copy()
    if case == "causal":
        valid &= np.arange(cols)[None, :] <= np.arange(rows)[:, None]
    instr = Instruction.make("topk", dst_addr=100, src_buf=Buffer.ACC, src_addr=0, rows=rows,
                             cols=cols, k=k, has_key_mask=int("key_mask" in case),
                             key_mask_addr=0, causal=int(case == "causal"))
    m = machine_for(instr)
    put(m, Buffer.ACC, 0, scores)
    put(m, Buffer.MBUF, 0, keys)
    run(instr, m)
    np.testing.assert_array_equal(get(m, Buffer.MBUF, 100, rows, cols),
                                  topk_ref(scores, k, valid).astype(np.uint8))


def similarity_ref(spa, prob, window, threshold, mode, k):
    heads, length, _ = spa.shape
    reuse = [-1] * length
    computed: list[int] = []
    for i in range(length):
        best, best_score = None, -np.inf
        for j in reversed(computed[-window:] if window else []):  # most recent first
            if mode == "overlap":
                score = np.mean([(spa[h, i] & spa[h, j]).sum() / k for h in range(heads)])
            else:
                cos = []
                for h in range(heads):
                    n = np.linalg.norm(prob[h, i]) * np.linalg.norm(prob[h, j])
                    cos.append(float(prob[h, i] @ prob[h, j]) / n if n > 0 else 0.0)
                score = np.mean(cos)
            if score > best_score:
                best, best_score = j, score
        if best is not None and best_score >= threshold:
            reuse[i] = best
        else:
            computed.append(i)
    key_mask = spa[:, computed, :].any(axis=1)
    return np.array(reuse), key_mask


@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0])
def test_similarity(mode: int, threshold: float) -> None:
    heads, length, k = 2, 9, 3
    base = RNG.random((heads, 3, length))
    scores = base[:, RNG.integers(0, 3, length), :] + RNG.random((heads, length, length)) * 0.05
    spa = np.zeros(scores.shape, bool)
    for h in range(heads):
        for i in range(length):
            spa[h, i, np.argsort(-scores[h, i], kind="stable")[:k]] = True
    prob = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    prob32 = prob.astype(np.float32)
    instr = Instruction.make("similarity", map_addr=0, key_mask_addr=100, spa_addr=1000,
                             has_prob=1, prob_addr=0, heads=heads, length=length, keys=length,
                             window=3, k=k, threshold=threshold, mode=mode)
    m = machine_for(instr)
    put(m, Buffer.MBUF, 1000, spa.astype(np.uint8))
    put(m, Buffer.VBUF, 0, prob32)
    _, work = run(instr, m)
    reuse, key_mask = similarity_ref(spa, prob32.astype(np.float64), 3,
                                     float(np.float32(threshold)),
                                     "overlap" if mode == 0 else "cosprob", k)
    got_map = m.buffers[Buffer.MBUF][0:2 * length].copy().view("<i2")
    np.testing.assert_array_equal(got_map, reuse)
    np.testing.assert_array_equal(get(m, Buffer.MBUF, 100, heads, length), key_mask)
    assert work.rows_executed == int((reuse == -1).sum())
    if threshold > 1.0:
        assert (reuse == -1).all()


# ----------------------------------------------------------------------------- host, errors


def test_host_segment_runs_onnx_on_dram_tensors() -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["c"], name="mul")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    seg = HostSegment(model.SerializeToString(),
                      (TensorDesc("a", (2, 3), "float32", 0), TensorDesc("b", (2, 3), "float32",
                                                                          64)),
                      (TensorDesc("c", (2, 3), "float32", 128),))
    program = Program([Instruction.make("host", segment=0), Instruction.make("halt")],
                      CFG.hash,
                      io=[IODescriptor("a", (2, 3), "float32", 0, "input"),
                          IODescriptor("b", (2, 3), "float32", 64, "input"),
                          IODescriptor("c", (2, 3), "float32", 128, "output")],
                      host_segments=[seg])
    a, b = f32((2, 3)), f32((2, 3))
    result = execute(program, {"a": a, "b": b}, CFG)
    np.testing.assert_array_equal(result.outputs["c"], a * b)
    assert result.work[0].dram_read_bytes == 48 and result.work[0].dram_write_bytes == 24
    onnx.checker.check_model(model)


def test_out_of_range_operand_names_instruction_and_field() -> None:
    acc_elems = CFG.accumulator_buffer_bytes // 4
    program = Program([Instruction.make("halt")], CFG.hash)
    program.instructions.insert(0, Instruction.make("gemm", acc_addr=acc_elems - 2, m=1, k=1,
                                                    n=4))
    with pytest.raises(ProgramError, match=r"instruction 0 \(gemm\): field 'acc_addr'"):
        execute(program, {}, CFG)


def test_inputs_are_checked() -> None:
    program = Program([Instruction.make("halt")], CFG.hash,
                      io=[IODescriptor("x", (2,), "int8", 0, "input")])
    with pytest.raises(ProgramError, match="missing x"):
        execute(program, {}, CFG)
    with pytest.raises(ProgramError, match="expected shape"):
        execute(program, {"x": np.zeros(3, np.int8)}, CFG)
    with pytest.raises(ProgramError, match="expected dtype"):
        execute(program, {"x": np.zeros(2, np.float32)}, CFG)
