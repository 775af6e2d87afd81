"""SFU row functions with fewer temporaries (issue 16) give the bits of the expressions they
replaced: LAYERNORM's centred rows computed once and scaled in place, softmax logits widened
before the multiply."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.layer_norm_rows import layer_norm_rows
from esact_cc.runtime.online_softmax import logits

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38, 1e-45], np.float32)


def former_layer_norm_rows(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                           eps: float) -> np.ndarray:
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + float(np.float32(eps)))
    y = y * np.asarray(gamma, np.float32).astype(np.float64) + \
        np.asarray(beta, np.float32).astype(np.float64)
    return y.astype(np.float32)


def rows(seed: int, cols: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, cols)) * scale).astype(np.float32)
    x[0, :] = 1.5  # a constant row: variance 0
    x.flat[rng.integers(0, x.size, 4)] = rng.choice(SPECIALS, 4)
    return x


@pytest.mark.parametrize("cols", [1, 7, 768])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4, 1e30])
def test_layer_norm_rows_is_the_former_expression(cols: int, scale: float) -> None:
    x = rows(cols, cols, scale)
    rng = np.random.default_rng(cols + 1)
    gamma, beta = (rng.standard_normal(cols).astype(np.float32) for _ in range(2))
    with np.errstate(all="ignore"):
        for eps in (1e-12, 1e-5):
            assert layer_norm_rows(x, gamma, beta, eps).tobytes() == \
                former_layer_norm_rows(x, gamma, beta, eps).tobytes()


@pytest.mark.parametrize("scale", [0.125, 1 / 3, 3e38])
def test_logits_are_the_mixed_type_product(scale: float) -> None:
    x = rows(3, 200, 50.0)
    with np.errstate(all="ignore"):
        want = np.multiply(x, np.float64(np.float32(scale)), dtype=np.float64)
        assert logits(x, scale, None).tobytes() == want.tobytes()
        assert logits(x[:, ::2], scale, None).tobytes() == want[:, ::2].tobytes()
