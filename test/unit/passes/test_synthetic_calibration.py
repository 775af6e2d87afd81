"""The calibration set used without calibration data: drawn from the model's input domain
(token ids over the vocabulary read from the embedding table, masks 1, segment ids 0),
deterministic, and more accurate than the former single all-ones input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.dialect_registry import make_context
from esact_cc.pipeline import make_pass
from esact_cc.tuning import synthetic_calibration
from esact_cc.tuning.synthetic_calibration import (
    default_sample_count,
    synthetic_calibration_samples,
)

VOCAB, L, D, F = 1000, 16, 32, 64


def _encoder(length: int = L) -> ModelProto:
    """Token + segment embeddings, masked, then an FFN (two linears). Embedding rows differ in
    magnitude by 30x, as trained vocabularies do: one token shows a fraction of the range."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, D)).astype(np.float32)
    table *= np.geomspace(0.1, 3.0, VOCAB, dtype=np.float32)[rng.permutation(VOCAB)][:, None]
    table[1] *= 0.1  # the former default's token
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("tokens", table), ("segments", rng.standard_normal((2, D)).astype(np.float32)),
        ("w1", (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32)),
        ("b1", np.zeros(F, np.float32)),
        ("w2", (rng.standard_normal((F, D)) / np.sqrt(F)).astype(np.float32)),
        ("b2", np.zeros(D, np.float32)), ("axes", np.array([2], np.int64))]]
    nodes = [
        helper.make_node("Gather", ["tokens", "input_ids"], ["tok"], name="/emb/tok"),
        helper.make_node("Gather", ["segments", "token_type_ids"], ["seg"], name="/emb/seg"),
        helper.make_node("Add", ["tok", "seg"], ["emb"], name="/emb/add"),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT, name="/mask/cast"),
        helper.make_node("Unsqueeze", ["maskf", "axes"], ["mask3"], name="/mask/unsqueeze"),
        helper.make_node("Mul", ["emb", "mask3"], ["x"], name="/mask/mul"),
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="/ffn/up/MatMul"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="/ffn/up/Add"),
        helper.make_node("Relu", ["h1"], ["h2"], name="/ffn/relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["y0"], name="/ffn/down/MatMul"),
        helper.make_node("Add", ["y0", "b2"], ["y"], name="/ffn/down/Add"),
    ]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, length])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "encoder", ints,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, length, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_synthetic_set_spans_the_vocabulary_and_is_deterministic(capsys) -> None:
    module = api.compile(_encoder(), stage="transformer").module
    samples = synthetic_calibration_samples(module, 8)
    again = synthetic_calibration_samples(api.compile(_encoder(), stage="transformer").module, 8)
    assert len(samples) == 8
    for one, other in zip(samples, again):
        assert one.keys() == other.keys()
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])
    ids = np.concatenate([s["input_ids"].ravel() for s in samples])
    assert ids.min() >= 0 and ids.max() < VOCAB  # the table's rows, read from the IR
    assert np.histogram(ids, bins=10, range=(0, VOCAB))[0].min() > 0  # every tenth drawn from
    assert len(np.unique(ids)) > 0.8 * ids.size
    assert all((s["attention_mask"] == 1).all() and (s["token_type_ids"] == 0).all() for s in samples)
    assert not np.array_equal(samples[0]["input_ids"], samples[1]["input_ids"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_new_default_beats_the_former_all_ones_input(tmp_path, capsys) -> None:
    model = _encoder()
    rng = np.random.default_rng(42)
    held_out = [{"input_ids": rng.integers(0, VOCAB, (1, L)).astype(np.int64),
                 "attention_mask": np.ones((1, L), np.int64),
                 "token_type_ids": np.zeros((1, L), np.int64)} for _ in range(4)]
    session = ort.InferenceSession(model.SerializeToString())
    former = {name: np.ones((1, 1, L), np.int64) for name in held_out[0]}  # integer inputs = 1
    np.savez(tmp_path / "former.npz", **former)

    def worst_cosine(compiled) -> float:
        return min(_cosine(compiled.run(s)["y"], session.run(None, s)[0]) for s in held_out)

    # The former default: that one sample, per-tensor scales only (group-size 0), no bias
    # correction.
    former_int8 = api.compile(model, stage="transformer")
    for step in (make_pass("calibrate", former_int8.store, calibration_data=str(tmp_path / "former.npz")),
                 make_pass("quantize", former_int8.store, group_size=0, activation_scales="tensor",
                           bias_correction="off")):
        step.apply(make_context(), former_int8.module)
    old = worst_cosine(former_int8)
    new = worst_cosine(api.compile(model, stage="quantized"))
    assert "synthetic input(s) drawn from the model's input domain" in capsys.readouterr().err
    assert new > 0.99 and new > old + 0.01, (old, new)


def test_the_sample_count_is_checked() -> None:
    from esact_cc.runtime.errors import CompileError

    with pytest.raises(CompileError, match="synthetic-samples must be >= 1, got 0"):
        api.compile(_encoder(), stage="quantized", synthetic_samples=0)


def test_a_sample_count_with_calibration_data_is_refused(tmp_path) -> None:
    from esact_cc.runtime.errors import CompileError

    np.savez(tmp_path / "c.npz", **{n: np.ones((1, 1, L), np.int64)
                                    for n in ("input_ids", "attention_mask", "token_type_ids")})
    with pytest.raises(CompileError, match="synthetic-samples applies only without"):
        api.compile(_encoder(), stage="quantized", synthetic_samples=4,
                    calibration_data=str(tmp_path / "c.npz"))


def test_esact_cc_takes_the_sample_count(tmp_path) -> None:
    import subprocess
    import sys

    from onnx import save

    save(_encoder(), str(tmp_path / "m.onnx"))
    result = subprocess.run([sys.executable, "-m", "esact_cc.cli.esact_cc_main", str(tmp_path / "m.onnx"),
                             "--compile-to", "quantized", "--synthetic-samples", "3",
                             "-o", str(tmp_path / "q.mlir")], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "come from 3 synthetic input(s)" in result.stderr
    assert "transformer.linear" in (tmp_path / "q.mlir").read_text()


def test_the_default_sample_count_covers_the_rows_budget() -> None:
    assert [default_sample_count(rows) for rows in (1, 16, 32, 33, 64, 128, 129, 256, 4096)] == \
        [8, 8, 8, 8, 4, 2, 2, 1, 1]


def test_a_long_model_calibrates_on_fewer_samples_and_says_so(capsys, monkeypatch) -> None:
    counts: list[int] = []
    original = synthetic_calibration.synthetic_calibration_samples
    monkeypatch.setattr("esact_cc.tuning.calibrate_pass.synthetic_calibration_samples",
                        lambda module, count: counts.append(count) or original(module, count))
    api.compile(_encoder(512), stage="quantized")
    err = capsys.readouterr().err
    assert counts == [1]
    assert "come from 1 synthetic input(s)" in err
    # no attention, so no token axis the rows could be cut along (calibration_token_subset.py)
    assert ("1 sample(s) of 512 rows, all computed (no attention defines the token rows): the "
            "default covers 256 activation rows") in err
    api.compile(_encoder(), stage="quantized")  # 16 tokens: 8 samples, nothing more said
    err = capsys.readouterr().err
    assert counts == [1, 8] and "come from 8 synthetic" in err and "default covers" not in err
    api.compile(_encoder(512), stage="quantized", synthetic_samples=8)  # chosen: as asked
    err = capsys.readouterr().err
    assert counts == [1, 8, 8] and "default covers" not in err
