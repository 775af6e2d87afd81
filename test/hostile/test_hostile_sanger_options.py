"""Hostile `--sparsity sanger` options and configs: a misspelt or out-of-range option, a layer
the model does not have, a Sanger config with an SPLS option or an SPLS config's format. Each
is one `prog: error:` line and no file is written."""

from __future__ import annotations

import json

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.bundled_model import MODELS_DIR

MODEL = MODELS_DIR / "digits_vit.onnx"


@pytest.mark.parametrize("option, needles", [
    ("threshhold=0.1", ["unknown option 'threshhold'", "did you mean 'threshold'?"]),
    ("bits=9", ["bits must be in [2, 8]"]),
    ("threshold=1.5", ["threshold must be in [0, 0.999]"]),
    ("9:threshold=0.1", ["per-layer options for layer(s) 9", "4 attention layer(s)"]),
])
def test_bad_sanger_options(tmp_path, option, needles):
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--sparsity", "sanger", "--sparsity-option", option,
                      "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, *needles)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("config, needles", [
    ({"format": "esact-sanger-config", "version": 1, "options": {"window": 4}},
     ["Sanger config 'cfg.json'", "unknown option 'window'", "valid: bits, threshold"]),
    ({"format": "esact-spls-config", "version": 1, "options": {}},
     ["not a Sanger config", "esact-sanger-config"]),
])
def test_bad_sanger_configs(tmp_path, config, needles):
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--sparsity", "sanger", "--spls-config", "cfg.json",
                      "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, *needles)
    assert tree_state(tmp_path) == before
