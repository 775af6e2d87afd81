"""insert-spls + the spls interpreter semantics: dense equivalence and the masks' meaning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from esact_cc.passes.insert_spls import InsertSplsPass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.spls_kernels import (
    hlog_encode,
    local_similarity,
    masked_softmax,
    predict_attention,
    topk_mask,
)

from esact_cc.dialect_registry import make_context
from esact_cc.ir_queries import main_function
from esact_cc.interpreter.reference_interpreter import Interpreter, run_module
from spls_test_layer import layer_fp32, layer_inputs

MODELS = Path(__file__).resolve().parents[3] / "esact_cc" / "models"


def layer_module(seed: int = 0):
    """The shared test layer with a padding mask, not causal, FP32."""
    return layer_fp32(masked=True, causal=False, seed=seed)


def with_spls(module, store, **options):
    clone = module.clone()
    InsertSplsPass(store=store, **options).apply(make_context(), clone)
    clone.verify()
    return clone


def form(op) -> str:
    """An op's name with the masks it carries: `transformer.linear[rows]`."""
    if not op.name.startswith("transformer."):
        return op.name
    masks = [n for n in ("rows", "keys", "spa") if getattr(op, n, None) is not None]
    return op.name + (f"[{','.join(masks)}]" if masks else "")


class Recorder(Interpreter):
    """Keeps every op's outputs (by `form`, in order) and its operand values."""

    def __init__(self, store):
        super().__init__(store)
        self.seen: list[tuple[str, list[np.ndarray], list[np.ndarray]]] = []

    def run_op(self, op, args):
        outs = super().run_op(op, args)
        self.seen.append((form(op), list(args), outs))
        return outs

    def of(self, name: str):
        return [(a, o) for n, a, o in self.seen if n == name]


def record(module, store, inputs) -> Recorder:
    rec = Recorder(store)
    rec.run_function(main_function(module), inputs)
    return rec


@pytest.mark.parametrize("attention", ["dense", "topk"])
@pytest.mark.parametrize("similarity", ["cosprob", "overlap"])
def test_k_ratio_one_and_no_reuse_equals_dense_exactly(attention: str, similarity: str) -> None:
    module, store = layer_module()
    inputs = layer_inputs(padded=0)
    dense = run_module(module, inputs, store)["y"]
    sparse = with_spls(module, store, k_ratio=1.0, threshold=1.5, attention=attention,
                       similarity=similarity)
    assert np.array_equal(run_module(sparse, inputs, store)["y"], dense)


def test_k_ratio_one_equals_dense_int8() -> None:
    from esact_cc.passes.quantize import QuantizePass
    from esact_cc.tuning.calibrate_pass import CalibratePass

    module, store = layer_module()
    for step in (CalibratePass(store=store), QuantizePass(store=store)):
        step.apply(make_context(), module)
    inputs = layer_inputs()
    dense = run_module(module, inputs, store)["y"]
    sparse = with_spls(module, store, k_ratio=1.0, threshold=1.5, attention="topk")
    assert any(form(op) == "transformer.attention[rows,spa]" and op.is_quantized
               for op in sparse.walk())
    assert np.array_equal(run_module(sparse, inputs, store)["y"], dense)


def test_masked_ops_follow_the_reuse_map_and_masks() -> None:
    module, store = layer_module(seed=3)
    # threshold 0 makes every row after row 0 reuse; window 1: always the previous computed row.
    sparse = with_spls(module, store, attention="topk", k_ratio=0.5, threshold=-1.0, window=1,
                       similarity="overlap")
    inputs = layer_inputs(padded=1)
    rec = record(sparse, store, inputs)
    (_, (reuse, keys)), = rec.of("spls.local_similarity")
    assert reuse[0].tolist() == [-1, 0, 0, 0, 0, 0]
    (_, (spa,)), = rec.of("spls.topk")
    assert not spa[..., 5].any()  # the padded key is never selected
    assert spa.sum(-1).max() == 3  # ceil(0.5 * 6)
    # Row-masked linears: reused rows carry their representative's row.
    for args, (y,) in rec.of("transformer.linear[rows]"):
        dense = args[0] @ args[1] + (args[2] if len(args) == 4 else 0)
        assert np.allclose(y[0, 0], dense[0, 0], atol=1e-5)
        assert np.array_equal(y[0, 1:], np.repeat(y[0, :1], 5, axis=0))
    # Key-masked linears: unselected (row, head) blocks are 0, selected ones computed.
    for args, (y,) in rec.of("transformer.linear[keys]"):
        dense = args[0] @ args[1] + (args[2] if len(args) == 4 else 0)
        keep = np.repeat(keys[0].T, 4, axis=1)
        assert np.all(y[0][~keep] == 0)
        assert np.allclose(y[0][keep], dense[0][keep], atol=1e-5)
    # Sparse attention: row 0 attends only to its SPA keys (per head).
    (args, (out,)), = rec.of("transformer.attention[rows,spa]")
    q, k, v = args[0][0], args[1][0], args[2][0]
    for h in range(2):
        cols = slice(4 * h, 4 * h + 4)
        scores = q[0, cols] @ k[:, cols].T * 0.5
        p = masked_softmax(scores[None], spa[0, h, 0][None])[0]
        assert np.allclose(out[0, 0, cols], p @ v[:, cols], atol=1e-5)


def test_prediction_ops_match_the_kernels() -> None:
    module, store = layer_module(seed=4)
    sparse = with_spls(module, store, hlog_bits=5, k_ratio=0.4, threshold=0.8, window=3)
    inputs = layer_inputs(padded=2)
    rec = record(sparse, store, inputs)
    (_, (pam,)), = rec.of("spls.predict_attention")
    (_, (xc, xs)), = rec.of("spls.hlog_quantize")
    (_, (ln_out,)), = rec.of("transformer.layer_norm")[:1]
    expected_codes, expected_scale = hlog_encode(ln_out[0], 5)
    assert np.array_equal(xc[0], expected_codes) and float(xs[0]) == pytest.approx(expected_scale)
    zero = np.zeros(8)
    ref, ref_scale, _ = predict_attention(ln_out[0].astype(np.float64), store["wq"], store["wk"],
                                          2, 5, zero, store["bk"])
    valid = np.arange(6) < 4
    # a padded key holds PAM plus the mask (float32 minimum): a number top-k ranks last
    assert np.all(pam[0][..., ~valid] == np.finfo(np.float32).min)
    assert np.allclose(pam[0][..., valid], (ref * ref_scale)[..., valid], rtol=1e-5)
    (_, (spa,)), = rec.of("spls.topk")
    assert np.array_equal(spa[0], topk_mask(ref, 3, np.broadcast_to(valid, ref.shape)))
    (_, (reuse, keys)), = rec.of("spls.local_similarity")
    prob = masked_softmax(ref * ref_scale, np.broadcast_to(valid, ref.shape))
    exp_reuse, exp_keys = local_similarity(spa[0], prob, 3, float(np.float32(0.8)), "cosprob", 3)
    assert np.array_equal(reuse[0], exp_reuse) and np.array_equal(keys[0], exp_keys)


def test_per_layer_options_and_errors() -> None:
    module, store = layer_module()
    sparse = with_spls(module, store, layers="0:similarity=overlap,threshold=2.0,k-ratio=0.5")
    (sim,) = [op for op in sparse.walk() if op.name == "spls.local_similarity"]
    assert sim.mode.data == "overlap" and sim.threshold.value.data == 2.0 and sim.k.value.data == 3
    for bad in ({"similarity": "jaccard"}, {"attention": "sparse"}, {"hlog_bits": 1},
                {"k_ratio": 0.0}, {"layers": "1:threshold=0.5"}, {"layers": "0:bogus=1"},
                {"layers": "x:threshold=1"}, {"layers": "0:window=two"}):
        with pytest.raises(CompileError):
            with_spls(module, store, **bad)


@pytest.mark.skipif(not (MODELS / "digits_vit.onnx").exists(), reason="bundled model missing")
def test_bundled_vit_k_ratio_one_equals_dense() -> None:
    from esact_cc.api import compile

    compiled = compile(MODELS / "digits_vit.onnx", "transformer")
    images = np.load(MODELS / "digits_test.npz")["images"][:2]
    sparse = with_spls(compiled.module, compiled.store, k_ratio=1.0, threshold=1.01,
                       attention="topk")
    forms = [form(op) for op in sparse.walk()]
    assert forms.count("spls.predict_attention") == 4
    assert forms.count("transformer.linear[rows]") == 4 * 4  # Q, O, FFN up, FFN down per layer
    for image in images:
        inputs = {"pixel_values": image[None]}
        dense = compiled.run(inputs)["logits"]
        assert np.array_equal(run_module(sparse, inputs, compiled.store)["logits"], dense)
    # With reuse on, outputs differ but stay finite and the prediction is used.
    reusing = with_spls(compiled.module, compiled.store, threshold=0.9)
    out = run_module(reusing, {"pixel_values": images[:1]}, compiled.store)["logits"]
    assert np.all(np.isfinite(out)) and not math.isclose(float(np.abs(out).sum()), 0.0)

