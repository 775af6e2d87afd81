"""SpAtten's numerics (runtime/spatten_kernels.py) and the meaning of the tokens / head_mask
operands of transformer.attention: a pruned token is no key and its row is 0, a pruned head
is 0, every other row equals attention over the kept tokens alone."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.interpret_transformer_ops import run_attention
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.runtime import spatten_kernels as sk
from esact_cc.weight_store import WeightStore

ATTENTION = """builtin.module {{
  func.func @main(%q: tensor<1x5x8xf32> {{onnx.name = "q"}}, %t: tensor<{tokens}xi8> {{onnx.name = "t"}}, %h: tensor<{heads}xi8> {{onnx.name = "h"}}{spa_arg}) -> (tensor<1x5x8xf32> {{onnx.name = "y"}}) {{
    %y = transformer.attention %q, %q, %q {spa}tokens(%t) head_mask(%h) heads(2) scale(5.000000e-01) : (tensor<1x5x8xf32>, tensor<1x5x8xf32>, tensor<1x5x8xf32>, {spa_type}tensor<{tokens}xi8>, tensor<{heads}xi8>) -> tensor<1x5x8xf32>
    func.return %y : tensor<1x5x8xf32>
  }}
}}"""


def parse(tokens="1x5", heads="1x2", spa=False):
    text = ATTENTION.format(tokens=tokens, heads=heads, spa="spa(%s) " if spa else "",
                            spa_type="tensor<1x2x5x5xi8>, " if spa else "",
                       spa_arg=', %s: tensor<1x2x5x5xi8> {onnx.name = "s"}' if spa else "")
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module


def test_pruned_tokens_and_heads_are_zero_and_kept_rows_see_only_kept_keys():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 5, 8)).astype(np.float32)
    tokens = np.array([[1, 0, 1, 1, 0]], np.int8)
    heads = np.array([[0, 1]], np.int8)
    y = run_module(parse(), {"q": q, "t": tokens, "h": heads}, WeightStore({}))["y"]
    kept = [0, 2, 3]
    alone = run_attention(q[:, kept], q[:, kept], q[:, kept], None, num_heads=2, scale=0.5,
                          causal=False)
    np.testing.assert_allclose(y[0, kept, 4:], alone[0, :, 4:], rtol=1e-6)
    assert not y[0, :, :4].any()  # head 0 pruned
    assert not y[0, [1, 4]].any()  # tokens 1, 4 pruned


def test_everything_kept_is_the_dense_attention():
    q = np.random.default_rng(1).standard_normal((1, 5, 8)).astype(np.float32)
    y = run_module(parse(tokens="5", heads="2"), {"q": q, "t": np.ones(5, np.int8),
                                                  "h": np.ones(2, np.int8)}, WeightStore({}))
    dense = run_attention(q, q, q, None, num_heads=2, scale=0.5, causal=False)
    np.testing.assert_array_equal(y["y"], dense)


@pytest.mark.parametrize("kwargs, message", [
    ({"tokens": "1x4"}, "tokens must be 1x5 or 5, got 1x4"),
    ({"heads": "3"}, "head_mask must be 1x2 or 2, got 3"),
    ({"spa": True}, "tokens / head_mask exclude spa")])
def test_the_verifier_names_the_bad_mask(kwargs, message):
    with pytest.raises(VerifyException, match=message):
        parse(**kwargs)


def test_top_k_keeps_the_best_alive_protects_the_first_and_never_readmits():
    scores = np.array([0.1, 5.0, -np.inf, 3.0, 3.0, 0.2], np.float32)
    np.testing.assert_array_equal(sk.top_k(scores, 0.5), [0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(sk.top_k(scores, 0.4), [0, 1, 0, 1, 0, 0])  # tie: lower
    np.testing.assert_array_equal(sk.top_k(scores, 0.4, protect=1), [1, 1, 0, 0, 0, 0])
    assert not sk.top_k(scores, 1.0)[2]


def test_begin_layer_keeps_all_first_then_marks_pruned_minus_infinity():
    tokens, heads, s, hs = sk.begin_layer(None, None, 0.5, 0.5, 4, 2)
    assert tokens.all() and heads.all() and not s.any() and not hs.any()
    tokens, heads, s, hs = sk.begin_layer(np.array([1, 4, 2, 3], np.float32),
                                          np.array([1, 2], np.float32), 0.5, 0.5, 4, 2)
    np.testing.assert_array_equal(tokens, [0, 1, 0, 1])
    np.testing.assert_array_equal(heads, [0, 1])
    assert np.isneginf(s[[0, 2]]).all() and np.isneginf(hs[0])


def test_progressive_quantization_refetches_flat_rows_only():
    rng = np.random.default_rng(2)
    q8 = rng.integers(-127, 128, (4, 8))
    k8 = rng.integers(-127, 128, (4, 8))
    valid = np.ones((4, 4), bool)
    scale = np.float32(0.001)  # small logits: flat rows
    msb, none = sk.progressive_probabilities(q8, k8, scale, None, valid, 0.0)
    full, every = sk.progressive_probabilities(q8, k8, scale, None, valid, 1.0)
    assert none == 0 and every == 4
    z = (q8 @ k8.T) * np.float64(scale)
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(full, expected / expected.sum(1, keepdims=True), rtol=1e-6)
    assert not np.array_equal(msb, full)  # the MSBs alone differ
    assert (sk.msb_codes(np.array([-127, -1, 0, 15, 16, 127])) ==
            [-128, -16, 0, 0, 16, 112]).all()


def test_score_rows_adds_received_probability_and_output_magnitude():
    rng = np.random.default_rng(3)
    q8, k8, v8 = (rng.integers(-50, 50, (3, 4)) for _ in range(3))
    s = np.array([0.0, -np.inf, 1.0], np.float32)
    hs = np.array([0.0, -np.inf], np.float32)
    sk.score_rows(s, hs[0:1], 0, q8, k8, v8, np.float32(0.01), None, None, 1.0)
    assert np.isneginf(s[1]) and s[0] + s[2] == pytest.approx(3.0, rel=1e-5)  # rows 0, 2
    assert hs[0] > 0
    before = s.copy()
    assert sk.score_rows(s, hs[1:2], 0, q8, k8, v8, np.float32(0.01), None, None, 1.0) == 0
    np.testing.assert_array_equal(s, before)  # a pruned head adds nothing


@pytest.mark.parametrize("tile", [1, 3, 4, 7])
def test_scoring_in_query_tiles_gives_the_bits_of_the_whole(tile):
    """Heads in order, each in query tiles (the long-sequence SPATTEN_SCORE): scores, head
    scores and refetched rows equal scoring each head over all rows at once, with a
    per-query mask, causality and a pruned token."""
    rng = np.random.default_rng(5)
    length, heads, d = 9, 3, 8
    q8, k8, v8 = (rng.integers(-127, 128, (heads, length, d)) for _ in range(3))
    mask = np.where(rng.random((length, length)) < 0.3, -10000.0, 0.0).astype(np.float32)
    visible = np.arange(length)[None, :] <= np.arange(length)[:, None]
    start = rng.random(length).astype(np.float32)
    start[4] = -np.inf
    results = []
    for rows in (length, tile):
        s, hs, refetched = start.copy(), np.zeros(heads, np.float32), 0
        for h in range(heads):
            for r0 in range(0, length, rows):
                r = slice(r0, r0 + rows)
                refetched += sk.score_rows(s, hs[h:h + 1], r0, q8[h, r], k8[h], v8[h],
                                           np.float32(0.00005), mask[r], visible[r], 0.5)
        results.append((s, hs, refetched))
    (whole_s, whole_hs, whole_n), (tiled_s, tiled_hs, tiled_n) = results
    np.testing.assert_array_equal(tiled_s, whole_s)
    np.testing.assert_array_equal(tiled_hs, whole_hs)
    assert tiled_n == whole_n > 0 and np.isneginf(whole_s[4]) and (whole_hs > 0).all()
