"""Every option a compilation gets is checked: unknown or misspelt names, wrong types and
options of stages that would not run are one-line errors, never silently dropped."""

from __future__ import annotations

import pytest

from esact_cc import api, pipeline
from esact_cc.bundled_model import MODELS_DIR
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.registry import scheme_named
from esact_cc.sparsity.selection import select_scheme

MODEL = MODELS_DIR / "digits_vit.onnx"


def _error(**extra) -> str:
    with pytest.raises(CompileError) as error:
        api.compile(MODEL, **extra)
    line = str(error.value)
    assert "\n" not in line
    return line


def test_a_misspelt_keyword_names_the_nearest_option():
    """It used to be dropped: the model was then calibrated on a synthetic input."""
    line = _error(stage="quantized", calibraton_data="calib.npz")
    assert line.startswith("unknown compile option 'calibraton_data' (did you mean "
                           "'calibration_data'? valid: calibration_data, synthetic_samples, "
                           "dead_rows")


@pytest.mark.parametrize("extra, message", [
    ({"stage": "esact", "hw": 3}, "compile option hw: expected str or PathLike or None, got 3"),
    ({"stage": "esact", "spls_chunk_rows": True}, "compile option spls_chunk_rows: expected int"),
    ({"stage": "sparsity", "sparsity": ["spls"]}, "compile option sparsity: expected str"),
    ({"stage": "sparsity", "sparsity_option": [3]}, "sparsity_option: expected NAME=VALUE "
                                                     "strings, got 3"),
    ({"stage": "sparsity", "sparsity_option": ["x=1"], "spls_option": ["y=1"]},
     "give sparsity_option or its older name spls_option, not both"),
    ({"stage": "quantized", "sparsity": "spls"},
     "compile option sparsity is used by stage 'sparsity', after the last stage run "
     "('quantized')"),
    ({"stage": "sparsity", "hw": "default"}, "compile option hw is used by stage 'esact'"),
    ({"stage": "quantized", "dead_rows": "no"}, "compile option dead_rows: expected bool or None"),
    ({"stage": "transformer", "dead_rows": False},
     "compile option dead_rows is used by stage 'quantized'"),
    ({"stage": "sparsity", "sparsity": "SPLS"}, "--sparsity: unknown sparsity scheme 'SPLS' "
                                                 "(did you mean 'spls'?"),
    ({"stage": "sparsity", "sparsity_option": ["k-ratio=1.5"]},
     "--sparsity-option: k-ratio must be in (0, 1], got '1.5'"),
    ({"stage": "sparsity", "sparsity": "dense", "sparsity_option": ["window=2"]},
     "--sparsity-option: scheme 'dense' takes no options"),
])
def test_bad_compile_options_are_one_line_errors(extra, message):
    assert _error(**extra).startswith(message)


def test_spls_is_an_accepted_name_of_the_sparsity_stage():
    assert pipeline.stage_named("spls") is pipeline.stage_named("sparsity")
    assert "spls" not in pipeline.stage_names() and "spls" in pipeline.stage_names(True)


def test_options_select_the_scheme_and_reach_its_pass():
    scheme, settings = select_scheme({"sparsity_option": ["window=2", "1:threshold=0.5"]})
    assert scheme is scheme_named("spls")
    insert, no_reuse = scheme.passes(settings)
    assert (insert.name, insert.window, insert.layers) == ("insert-spls", 2, "1:threshold=0.5")
    assert no_reuse.name == "spls-no-reuse"  # drops the similarity of layers that reuse nothing
    assert select_scheme({})[0].passes(select_scheme({})[1]) == []


def test_the_cli_forwards_the_options_the_stages_declare(tmp_path, capsys):
    from esact_cc.cli.esact_cc_main import main

    out = tmp_path / "out.mlir"
    assert main([str(MODEL), "--compile-to", "quantized", "--sparsity", "spls", "-o",
                 str(out)]) == 1
    assert "compile option sparsity is used by stage 'sparsity'" in capsys.readouterr().err
    assert not out.exists()
