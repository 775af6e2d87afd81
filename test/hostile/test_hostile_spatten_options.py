"""Hostile `--sparsity spatten` options and configs: a misspelt or out-of-range option, a layer
the model does not have, a SpAtten config with another scheme's option or format. Each is one
`prog: error:` line and no file is written."""

from __future__ import annotations

import json

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.bundled_model import MODELS_DIR

MODEL = MODELS_DIR / "digits_vit.onnx"


@pytest.mark.parametrize("option, needles", [
    ("token_kep=0.5", ["unknown option 'token_kep'", "did you mean 'token-keep'?"]),
    ("token_keep=0", ["token-keep must be in (0, 1]"]),
    ("head_keep=1.5", ["head-keep must be in (0, 1]"]),
    ("protect=-1", ["protect must be in [0, 65535]"]),
    # (layer 3 computes one query row after esact-dead-rows: not pruned)
    ("9:token_keep=0.5", ["per-layer options for layer(s) 9", "3 attention layer(s)"]),
])
def test_bad_spatten_options(tmp_path, option, needles):
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--sparsity", "spatten", "--sparsity-option", option,
                      "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, *needles)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("config, needles", [
    ({"format": "esact-spatten-config", "version": 1, "options": {"threshold": 0.1}},
     ["SpAtten config 'cfg.json'", "unknown option 'threshold'"]),
    ({"format": "esact-sanger-config", "version": 1, "options": {}},
     ["not a SpAtten config", "esact-spatten-config"]),
])
def test_bad_spatten_configs(tmp_path, config, needles):
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "--sparsity", "spatten", "--spls-config", "cfg.json",
                      "-o", "out.esb", cwd=tmp_path)
    assert_user_error(result, *needles)
    assert tree_state(tmp_path) == before
