"""esact-tune --augment N end to end on the bundled digits ViT (fp32 IR, 6 test images, small
search tables): the search runs over the images and their copies and the config records it; a
model without image inputs, another scheme, or margins with copies are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from spls_tuning_fixtures import load_tuning_fixtures

from esact_cc.cli import esact_tune_main

MODELS = Path(esact_tune_main.__file__).resolve().parents[1] / "models"
TABLES, FIXTURES = load_tuning_fixtures("augment")


def digits(tmp_path: Path, count: int) -> Path:
    test = np.load(MODELS / "digits_test.npz")
    path = tmp_path / "digits.npz"
    np.savez(path, images=test["images"][:count], labels=test["labels"][:count])
    return path


def test_esact_tune_searches_over_the_copies(tmp_path, monkeypatch):
    TABLES.use_small_search_tables(monkeypatch)
    out = tmp_path / "spls.json"
    assert esact_tune_main.main([str(MODELS / "digits_vit.onnx"), "--calibration-data",
                                 str(digits(tmp_path, 6)), "--labels-key", "labels", "--ir",
                                 "transformer", "--budget", "50", "--augment", "2",
                                 "--uniform-only", "-o", str(out), "--quiet"]) == 0
    info = json.loads(out.read_text())["info"]
    assert info["augment"] == 2 and info["samples"] == 6


@pytest.mark.parametrize("extra, message", [
    (["--augment", "-1"], "--augment must be >= 0"),
    (["--augment", "2", "--loss-estimate", "margins"], "--loss-estimate margins"),
    (["--augment", "2", "--sparsity", "sanger"], "only the spls search"),
])
def test_bad_augment_options_are_one_line_errors(tmp_path, capsys, extra, message):
    code = esact_tune_main.main([str(MODELS / "digits_vit.onnx"), "--calibration-data",
                                 str(digits(tmp_path, 2)), "--labels-key", "labels",
                                 "-o", str(tmp_path / "spls.json"), *extra])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_augment_needs_image_inputs(tmp_path, capsys):
    model, calib = FIXTURES.write_tiny_classifier(tmp_path, 4, 1)
    code = esact_tune_main.main([str(model), "--calibration-data", str(calib), "--labels-key",
                                 "labels", "--ir", "transformer", "--augment", "1", "-o",
                                 str(tmp_path / "spls.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "--augment perturbs images: input 'input_ids'" in err
