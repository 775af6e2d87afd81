"""The modern-block SFU kernels (runtime/isa_modern_blocks.py) against their textbook forms:
Hugging Face's apply_rotary_pos_emb / LlamaRMSNorm / SiLU, written out in float64."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Queue, Unit
from esact_cc.runtime.isa_modern_blocks import mul_f32, relu, rms_norm_rows, rope_rows, silu


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@pytest.mark.parametrize("rotary_dim", [8, 4, 2])
def test_rope_rows_is_hf_apply_rotary_pos_emb_per_head(rotary_dim: int) -> None:
    rng = np.random.default_rng(0)
    rows, heads, head_dim = 5, 3, 8
    x = rng.standard_normal((rows, heads * head_dim)).astype(np.float32)
    angles = rng.uniform(-3, 3, (rows, rotary_dim // 2))
    cos = np.cos(np.concatenate([angles, angles], -1)).astype(np.float32)
    sin = np.sin(np.concatenate([angles, angles], -1)).astype(np.float32)

    got = rope_rows(x, cos, sin, head_dim, rotary_dim)

    per_head = x.astype(np.float64).reshape(rows, heads, head_dim)
    rot, rest = per_head[..., :rotary_dim], per_head[..., rotary_dim:]
    c, s = cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64)
    expected = np.concatenate([rot * c + _rotate_half(rot) * s, rest], -1).reshape(rows, -1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    if rotary_dim < head_dim:  # the passed-through channels are copied exactly
        np.testing.assert_array_equal(got.reshape(rows, heads, head_dim)[..., rotary_dim:],
                                      x.reshape(rows, heads, head_dim)[..., rotary_dim:])


def test_rms_norm_silu_relu_and_mul_are_their_formulas() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16)).astype(np.float32) * 3
    gamma = rng.standard_normal(16).astype(np.float32)
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_array_equal(rms_norm_rows(x, gamma, 1e-6), (x64 / rms * gamma).astype(np.float32))
    np.testing.assert_array_equal(silu(x), (x64 / (1 + np.exp(-x64))).astype(np.float32))
    np.testing.assert_array_equal(mul_f32(x, gamma[None]), x * gamma[None])  # float32 product
    assert silu(np.array([-1e4], np.float32))[0] == 0.0  # exp overflow gives 0, not NaN
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))


def test_the_instructions_are_sfu_instructions_in_the_table() -> None:
    for name in ("rmsnorm", "silu", "relu", "mul", "rope"):
        spec = INSTRUCTION_SPECS[name]
        assert (spec.queue, spec.unit) == (Queue.SFU, Unit.SFU)
    assert {"cos_addr", "sin_addr", "head_dim", "rotary_dim"} <= set(INSTRUCTION_SPECS["rope"].field_names)
