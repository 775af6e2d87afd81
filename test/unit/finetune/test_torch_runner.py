"""The torch forward of fine-tuning equals the reference interpreter, dense and with SPLS, and
its gradients reach every trained weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from esact_cc.dialect_registry import make_context  # noqa: E402
from esact_cc.finetune.layer_weights import layer_weights  # noqa: E402
from esact_cc.finetune.torch_runner import TorchRunner  # noqa: E402
from esact_cc.interpreter.reference_interpreter import run_module  # noqa: E402
from esact_cc.pipeline import CompileOptions, compile_model, make_pass  # noqa: E402
from esact_cc.weight_store import WeightStore  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models"
MODELS = ["bert_tiny_legacy17", "vit_tiny_dynamo18", "minilm_tiny_dynamo20"]
AGGRESSIVE = {"threshold": 0.3, "window": 4, "hlog_bits": 4, "k_ratio": 0.25,
              "attention": "topk", "similarity": "cosprob"}
"""Low threshold and top-k attention: reused rows, key masks and SPA all in play."""


def _setup(name: str, spls: dict | None):
    path = FIXTURES / f"{name}.onnx"
    inputs = dict(np.load(FIXTURES / f"{name}.inputs.npz"))
    module, store = compile_model(str(path), "transformer", CompileOptions(
        input_shapes={k: v.shape for k, v in inputs.items()}))
    weights, _ = layer_weights(module, store, onnx.load(str(path)))
    if spls is not None:
        store = WeightStore({n: store[n] for n in store})
        make_pass("insert-spls", store, **spls).apply(make_context(), module)
    params = {w.handle: torch.tensor(np.asarray(store[w.handle], np.float32),
                                     requires_grad=True) for w in weights}
    return module, store, params, inputs


@pytest.mark.parametrize("spls", [None, AGGRESSIVE], ids=["dense", "spls"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_equals_reference_interpreter(name, spls):
    module, store, params, inputs = _setup(name, spls)
    runner = TorchRunner(module, store, params)
    ours = runner.run(inputs)
    reference = run_module(module, inputs, store)
    assert set(ours) == set(reference)
    for out_name, ref in reference.items():
        got = ours[out_name]
        assert isinstance(got, torch.Tensor)  # every output depends on a trained weight
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-4, atol=2e-5)
    reused, rows = runner.reuse_counts()
    if spls is None:
        assert rows == 0
    else:
        assert rows > 0 and 0 < reused < rows, (reused, rows)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_reaches_every_trained_weight_through_spls(name):
    module, store, params, inputs = _setup(name, AGGRESSIVE)
    outputs = TorchRunner(module, store, params).run(inputs)
    sum(o.pow(2).sum() for o in outputs.values()).backward()
    missing = [h for h, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_reused_rows_take_the_representative_and_pass_its_gradient():
    from esact_cc.finetune.torch_kernels import representative_rows

    y = torch.arange(12.0).reshape(1, 4, 3).requires_grad_()
    out = representative_rows(y, np.array([-1, 0, -1, 2]))
    np.testing.assert_array_equal(out.detach().numpy()[0],
                                  y.detach().numpy()[0][[0, 0, 2, 2]])
    out.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy()[0, :, 0], [2, 0, 2, 0])


@pytest.mark.parametrize("name", ["bert_tiny_legacy17", "vit_tiny_dynamo18"])
def test_a_batch_equals_its_inputs_run_alone_and_the_cache_changes_nothing(name):
    module, store, params, inputs = _setup(name, AGGRESSIVE)
    rng = np.random.default_rng(0)
    batch = []
    for i in range(3):  # three different inputs of the fixture's shapes and kinds
        sample = {}
        for key, value in inputs.items():
            if value.dtype.kind == "f":
                sample[key] = (value + rng.normal(0, 0.5, value.shape)).astype(value.dtype)
            elif key == "input_ids":
                sample[key] = rng.integers(1, 100, value.shape).astype(value.dtype)
            else:
                sample[key] = value
        batch.append(sample)
    cache: dict = {}
    runner = TorchRunner(module, store, params, cache)
    first = runner.run_batch(batch, ["a", "b", "c"])
    assert cache  # the weight-independent prefix was kept per input
    again = runner.run_batch(batch, ["a", "b", "c"])
    for out_name, value in first.items():
        assert value.shape[0] == 3
        np.testing.assert_array_equal(again[out_name].detach().numpy(), value.detach().numpy())
        for i, sample in enumerate(batch):
            alone = TorchRunner(module, store, params).run(sample)[out_name]
            np.testing.assert_allclose(value[i:i + 1].detach().numpy(),
                                       alone.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_the_cache_keeps_only_what_no_weight_changes():
    """Masks come from trained values: after a weight update they are recomputed, not cached."""
    from esact_cc.finetune.distillation import _SplsStudent

    path = FIXTURES / "bert_tiny_legacy17.onnx"
    inputs = dict(np.load(FIXTURES / "bert_tiny_legacy17.inputs.npz"))
    base, store = compile_model(str(path), "transformer", CompileOptions(
        input_shapes={k: v.shape for k, v in inputs.items()}))
    weights, _ = layer_weights(base, store, onnx.load(str(path)))
    params = {w.handle: torch.tensor(np.asarray(store[w.handle], np.float32))
              for w in weights}
    student = _SplsStudent(base, store, {"threshold": 0.9, "window": 4}, weights, params)
    before = student.runner()  # fills the student's cache
    before.run_batch([inputs], ["x"])
    rng = np.random.default_rng(3)
    for p in params.values():  # an optimizer step, in place
        p += torch.tensor(rng.normal(0, 0.3, p.shape).astype(np.float32))
    cached = student.runner()
    got = cached.run_batch([inputs], ["x"])
    fresh = TorchRunner(cached.function.parent_op(), cached.numpy.store, params)
    expected = fresh.run_batch([inputs], [None])
    assert student.cache
    assert any(not np.array_equal(a, b) for a, b in zip(before.reuse_maps, fresh.reuse_maps))
    for a, b in zip(cached.reuse_maps, fresh.reuse_maps):
        np.testing.assert_array_equal(a, b)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
