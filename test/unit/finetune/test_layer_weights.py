"""The weights fine-tuning trains (layer roles, not names) and their way back into the ONNX file;
and the one-line error without torch. None of this needs torch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from esact_cc.finetune.layer_weights import TRAINED_ROLES, layer_weights, with_weights
from esact_cc.pipeline import CompileOptions, compile_model
from esact_cc.runtime.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models"
BERT = FIXTURES / "bert_tiny_legacy17.onnx"  # post-LN, 2 layers, a Gemm pooler (transB)
VIT = FIXTURES / "vit_tiny_dynamo18.onnx"  # pre-LN


def _compiled(path: Path):
    inputs = np.load(path.with_name(path.stem + ".inputs.npz"))
    shapes = {name: tuple(inputs[name].shape) for name in inputs}
    return compile_model(str(path), "transformer", CompileOptions(input_shapes=shapes))


@pytest.mark.parametrize("path", [BERT, VIT], ids=["bert", "vit"])
def test_every_layer_linear_and_norm_is_trained_and_nothing_else(path):
    module, store = _compiled(path)
    proto = onnx.load(str(path))
    weights, frozen = layer_weights(module, store, proto)
    assert frozen == []
    roles = {(w.layer, w.role) for w in weights}
    layers = sorted({w.layer for w in weights})
    assert layers == [0, 1]
    for layer in layers:  # weight and bias of q, k, v, o, ffn_up, ffn_down; both norms
        for role in ("q", "k", "v", "o", "ffn_up", "ffn_down", "norm"):
            assert (layer, role) in roles
    assert {w.role for w in weights} <= set(TRAINED_ROLES)
    by_layer_role = [w for w in weights if w.role != "norm"]
    assert len(by_layer_role) == 2 * 6 * 2
    assert len([w for w in weights if w.role == "norm"]) == 2 * 2 * 2
    names = {w.initializer for w in weights}
    assert not any("embed" in n or "pooler" in n or "classifier" in n for n in names)


def test_written_back_values_land_in_their_initializers_transposed_where_lifted():
    module, store = _compiled(BERT)
    proto = onnx.load(str(BERT))
    weights, _ = layer_weights(module, store, proto)
    values = {w.handle: np.asarray(store[w.handle]) + np.float32(1 + i)
              for i, w in enumerate(weights)}
    out = with_weights(proto, weights, values)
    assert [n.SerializeToString() for n in out.graph.node] == \
        [n.SerializeToString() for n in proto.graph.node]
    before = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert list(before) == list(after)
    trained = {w.initializer: w for w in weights}
    for name, array in after.items():
        if name not in trained:
            np.testing.assert_array_equal(array, before[name])
            continue
        w = trained[name]
        expected = values[w.handle].T if w.transposed else values[w.handle]
        np.testing.assert_array_equal(array, expected)
    # The source proto is not modified.
    assert all(np.array_equal(before[t.name], numpy_helper.to_array(t))
               for t in proto.graph.initializer)


def test_a_transposed_handle_maps_to_its_source_initializer():
    from esact_cc.finetune.layer_weights import _initializer_of

    shapes = {"w": (3, 5), "sq": (4, 4)}
    assert _initializer_of("w.T", (5, 3), shapes) == ("w", True)
    assert _initializer_of("w", (3, 5), shapes) == ("w", False)
    assert _initializer_of("w.T", (3, 5), shapes) is None  # wrong shape: not that tensor
    assert _initializer_of("w.scaled", (3, 5), shapes) is None
    assert _initializer_of("sq.T", (4, 4), shapes) == ("sq", True)


def test_without_torch_the_error_names_the_extra(monkeypatch):
    from esact_cc.finetune.torch_required import import_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(UsageError, match=r"finetune.*pip install"):
        import_torch()
