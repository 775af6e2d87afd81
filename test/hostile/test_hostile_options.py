"""Hostile option values (issue 10): non-ASCII layer indices, out-of-range windows and
thresholds, option text that would inject other layers' options, deeply nested SPLS configs,
misspelt names. Each is one `prog: error:` line before any compile, and no file is written."""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.bundled_model import MODELS_DIR

MODEL = MODELS_DIR / "digits_vit.onnx"


@pytest.mark.parametrize("option, needles", [
    ("²:window=1", ["bad layer index '²'"]),
    ("window=100000", ["window must be in [0, 65535]"]),
    ("threshold=-1e308", ["threshold must be in [-1, 2]"]),
    ("similarity=overlap;0:threshold=0", ["similarity must be one of overlap|cosprob"]),
    ("windw=3", ["unknown option 'windw'", "did you mean 'window'?"]),
])
def test_bad_sparsity_options(tmp_path, option, needles):
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--sparsity-option", option, "-o", "out.esb",
                      cwd=tmp_path)
    assert_user_error(result, "--sparsity-option", *needles)
    assert tree_state(tmp_path) == before


DEEP = "deeply nested"  # the text is made in the test: a parameter is also the test's id


@pytest.mark.parametrize("text, needles", [
    (DEEP, ["JSON nested too deeply"]),
    ('{"format": "esact-spls-config", "version": 1, "layers": {"²": {"window": 1}}}',
     ["bad layer index '²'"]),
    ('{"format": "esact-spls-config", "version": 1, "options": {"threshold": -1e308}}',
     ["threshold must be in [-1, 2]"]),
    ('{"format": "esact-spls-config", "version": 1, "options": {"similarity": "dense;0:w=1"}}',
     ["similarity must be one of"]),
    ('{"format": "esact-spls-config", "version": 1, "layer": {}}',
     ["unknown key 'layer'", "did you mean 'layers'?"]),
])
def test_bad_spls_configs(tmp_path, text, needles):
    if text == DEEP:
        text = ('{"format": "esact-spls-config", "version": 1, "info": ' + "[" * 100000
                + "]" * 100000 + "}")
    (tmp_path / "spls.json").write_text(text)
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--spls-config", "spls.json", "-o", "out.esb",
                      cwd=tmp_path)
    assert_user_error(result, "spls.json", *needles)
    assert tree_state(tmp_path) == before


def test_an_unknown_scheme_names_the_nearest(tmp_path):
    result = run_tool("esact-cc", MODEL, "--sparsity", "spsl", "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, "unknown sparsity scheme 'spsl'", "did you mean 'spls'?")


@pytest.mark.parametrize("pipeline_text, needles", [
    ("insert-spls{windw=3}", ["insert-spls: unknown option 'windw'", "did you mean 'window'?"]),
    ("calibrate{calibraton_data=\"x.npz\"}", ["did you mean 'calibration_data'?"]),
    ("insert-spls{window=100000}", ["insert-spls: window must be in [0, 65535]"]),
    ("insert-spls{layers=\"0:threshold=1;²:window=1\"}", ["bad layer index '²'"]),
])
def test_bad_pass_options_in_esact_opt(tmp_path, pipeline_text, needles):
    (tmp_path / "in.mlir").write_text("builtin.module {}\n")
    result = run_tool("esact-opt", "in.mlir", "-p", pipeline_text, cwd=tmp_path)
    assert_user_error(result, *needles, code=2)  # a bad command line
