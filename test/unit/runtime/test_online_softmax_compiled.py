"""The compiled whole-row softmax (runtime/online_softmax_compiled.py, _softmax_loops.c) gives
the numpy definition's float32 bits (online_softmax.softmax): on random tiles with masks, infinite
and NaN logits, maxima in any chunk (the fold's exponentials reused or not) and zero maxima
(the numpy form then runs)."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime import online_softmax, online_softmax_compiled
from esact_cc.runtime.sfu_loops import compiled_softmax_loops
from hypothesis import given, settings
from hypothesis import strategies as st


def assert_same_bits(z: np.ndarray, valid: np.ndarray | None) -> None:
    with np.errstate(all="ignore"):
        want = online_softmax.softmax(z, valid)
        got = online_softmax_compiled.softmax(z, valid)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 24), st.integers(1, 300),
       st.sampled_from([0.01, 1.0, 30.0, 300.0]), st.booleans(),
       st.sampled_from(["none", "-inf", "inf", "nan", "peak first", "zero"]))
def test_matches_the_numpy_form(seed: int, rows: int, cols: int, spread: float, masked: bool,
                                special: str) -> None:
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((rows, cols)) * spread).astype(np.float32).astype(np.float64)
    where = rng.random(z.shape) < 0.1
    if special == "-inf":
        z[where] = -np.inf
        z[0] = -np.inf  # a row without a finite logit: all 0
    elif special in ("inf", "nan"):
        z[where & (rng.random(z.shape) < 0.2)] = np.inf if special == "inf" else np.nan
    elif special == "peak first":  # the row's max in chunk 0: every fold exponential reused
        z[:, 0] += 50
    elif special == "zero":
        z = np.minimum(z, 0.0)  # zero chunk maxima: the numpy form's order decides
    valid = rng.random(z.shape) < 0.7 if masked else None
    if valid is not None:
        valid[-1] = False  # a row without a valid key
    assert_same_bits(z, valid)


def test_bert_sized_tiles_and_masks() -> None:
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((128, 512)) * 3).astype(np.float32).astype(np.float64)
    assert_same_bits(z, None)
    causal = np.arange(512)[None, :] <= np.arange(128)[:, None] + 200
    assert_same_bits(z, causal)
    assert_same_bits(z[:, :100], np.broadcast_to(causal[:1, :100], (128, 100)))
    assert_same_bits(np.zeros((0, 64)), None)


def test_the_compiled_loops_refuse_wrong_buffers() -> None:
    loops = compiled_softmax_loops()
    z, maxima = np.zeros((2, 70)), np.empty((2, 2))
    with pytest.raises(ValueError, match="z"):
        loops.chunk_maxima(z.astype(np.float32), None, maxima)
    with pytest.raises(ValueError, match="maxima"):
        loops.chunk_maxima(z, None, np.empty((2, 3)))
    with pytest.raises(ValueError, match="valid"):
        loops.chunk_maxima(z, np.ones((2, 69), np.uint8), maxima)
    with pytest.raises(ValueError, match="d"):
        loops.shifted(z, None, maxima, np.empty((2, 70)))
    with pytest.raises(ValueError, match="out"):
        loops.finish(np.empty((2, 128)), np.empty(140), maxima, np.zeros(2), np.ones(2),
                     np.ones(2, np.uint8), None, np.empty(140, np.float32))


def test_without_the_compiled_loops_the_error_says_how_to_build_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from esact_cc.runtime import sfu_loops
    from esact_cc.runtime.errors import InstallError

    monkeypatch.setattr(sfu_loops, "_compiled_softmax", None)
    monkeypatch.setattr(sfu_loops, "_missing_softmax", "No module named y", raising=False)
    with pytest.raises(InstallError, match=r"not importable \(No module named y\).*pip install"):
        online_softmax_compiled.softmax(np.zeros((2, 3)), None)
