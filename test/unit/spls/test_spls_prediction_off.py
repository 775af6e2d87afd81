"""`prediction=off` (insert-spls): a layer left without prediction is exactly the dense layer,
in the IR and in the binary; options that would do nothing beside it are errors."""

from __future__ import annotations

import pytest
from esact_cc.dialects import spls
from esact_cc.passes.insert_spls import LayerOptions, parse_layer_overrides
from esact_cc.passes.layer_roles import read_stamp
from esact_cc.runtime.errors import CompileError

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model


def _compile(calibration: str, **scheme) -> api.CompiledModel:
    return api.compile(str(load_bundled_model().onnx_path), stage="sparsity",
                       calibration_data=calibration, **scheme)


def _layer_ops(compiled: api.CompiledModel, layer: int) -> list[str]:
    return [str(op) for op in compiled.module.walk()
            if (where := read_stamp(op)) is not None and where.layer == layer]


def test_prediction_off_in_one_layer_leaves_it_as_dense(calibration) -> None:
    dense = _compile(calibration)
    off = _compile(calibration, sparsity="spls", sparsity_option=["0:prediction=off"])
    reuse_off = _compile(calibration, sparsity="spls", sparsity_option=["0:threshold=2.0"])
    assert _layer_ops(off, 0) == _layer_ops(dense, 0)
    assert _layer_ops(reuse_off, 0) != _layer_ops(dense, 0)  # reuse off still predicts
    predicted = {read_stamp(op).layer for op in off.module.walk()
                 if isinstance(op, spls.PredictAttentionOp)}
    assert predicted == {1, 2}  # layer 3 computes one row (dead rows): nothing to predict
    for layer in predicted:
        assert _layer_ops(off, layer) != _layer_ops(dense, layer)


def test_prediction_off_everywhere_is_an_error_naming_why(calibration, capsys) -> None:
    with pytest.raises(CompileError, match="--sparsity spls can take no layer"):
        _compile(calibration, sparsity="spls", sparsity_option=["prediction=off"])
    assert "prediction=off in every layer: the program is the dense one" in capsys.readouterr().err


@pytest.mark.parametrize("base, text, unused", [
    ({}, "2:prediction=off,threshold=0.9", "threshold"),
    ({"prediction": "off"}, "1:window=2,k-ratio=0.5", "k-ratio, window"),
])
def test_options_beside_prediction_off_are_errors(base, text, unused) -> None:
    with pytest.raises(CompileError, match=f"layer .: prediction=off leaves the layer dense, so "
                                           f"{unused} would do nothing"):
        parse_layer_overrides(text, LayerOptions(**base))


def test_prediction_on_again_per_layer() -> None:
    layers = parse_layer_overrides("1:prediction=on,threshold=0.9;2:prediction=off",
                                   LayerOptions(prediction="off"))
    assert layers[1].prediction == "on" and layers[1].threshold == 0.9
    assert layers[2].prediction == "off"
