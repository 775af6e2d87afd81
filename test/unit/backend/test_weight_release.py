"""After `quantize`, a compile keeps only the weights its module still names, each in its own
memory (the imported file's buffer is freed); a compile stopping at `quantized` keeps all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esact_cc.pipeline import compile_model
from esact_cc.weight_release import named_strings
from esact_cc.weight_store import WeightStore

MODEL = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "bert_tiny_legacy17.onnx"


def test_keep_only_drops_and_detaches_views() -> None:
    buffer = np.arange(12, dtype=np.float32)
    store = WeightStore({"a": buffer[:4], "b": buffer[4:], "c": np.ones(3, np.float32)})
    store.keep_only({"a", "c"})
    assert sorted(store) == ["a", "c"]
    assert store["a"].base is None and not store["a"].flags.writeable
    assert np.array_equal(store["a"], [0, 1, 2, 3]) and np.array_equal(store["c"], np.ones(3))


def test_compile_past_quantize_keeps_only_named_weights_in_own_memory() -> None:
    quantized_module, full = compile_model(MODEL, "quantized")
    _module, store = compile_model(MODEL, "esact")
    dead = set(full) - named_strings(quantized_module)  # the FP32 GEMM weights, among others
    assert dead and not dead & set(store)
    kept = set(full) & set(store)
    assert kept and all(store[name].base is None for name in kept)
    assert any(full[name].base is not None for name in kept)  # views of the file at 'quantized'
    assert all(np.array_equal(store[name], full[name]) for name in kept)
