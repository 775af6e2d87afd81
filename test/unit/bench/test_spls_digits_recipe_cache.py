"""bench/spls_digits_protocol.py's fine-tuned model cache (a model made with another recipe is
refused, never reused) and bench/spls_finetune_validation.py's per-recipe summary (no torch,
no digits model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from spls_digits_protocol import fine_tuned, recipe, recorded_recipe, train_setting
from spls_finetune_validation import by_recipe, kl_to


def protocol_args(workdir: Path, **changes) -> argparse.Namespace:
    values = {"workdir": workdir, "labels": False, "mixup": 0, "epochs": 8,
              "learning_rate": 3e-4, "temperature": 4.0, "dense_weight": 0.0,
              "train_threshold": 0.8} | changes
    return argparse.Namespace(**values)


def cached_model(workdir: Path, args: argparse.Namespace, seed: int) -> Path:
    """A model file and the training record finetune_digits writes for `args`' recipe."""
    made = recipe(seed, args)
    record = {"train_setting": made["train_setting"], "labels": made["labels"],
              "mixup": made["mixup"],
              "options": {k: made[k] for k in ("epochs", "learning_rate", "seed",
                                                "validation", "temperature", "dense_weight")}}
    path = workdir / f"digits_vit_protocol_s{seed}.onnx"
    path.write_bytes(b"model")
    path.with_suffix(".json").write_text(json.dumps(record))
    return path


def test_the_training_threshold_replaces_the_default_one_only():
    args = protocol_args(Path("."), train_threshold=0.75)
    assert train_setting(args) == ["hlog-bits=6", "window=8", "threshold=0.75",
                                   "first-reference=1"]


def test_a_cached_model_of_the_same_recipe_is_reused(tmp_path):
    args = protocol_args(tmp_path, labels=True)
    path = cached_model(tmp_path, args, seed=1)
    assert fine_tuned(1, {}, args) == (path, json.loads(path.with_suffix(".json").read_text()))


@pytest.mark.parametrize("change", [{"labels": True}, {"train_threshold": 0.75},
                                    {"temperature": 1.0}, {"epochs": 16}])
def test_a_cached_model_of_another_recipe_is_refused(tmp_path, change):
    cached_model(tmp_path, protocol_args(tmp_path), seed=0)
    with pytest.raises(SystemExit, match="was fine-tuned with .*use another --workdir"):
        fine_tuned(0, {}, protocol_args(tmp_path, **change))


def test_records_from_before_the_recipe_options_read_as_their_defaults():
    old = {"train_setting": ["threshold=0.8"], "labels": False,
           "options": {"epochs": 8, "learning_rate": 3e-4, "seed": 0, "validation": 144}}
    made = recorded_recipe(old)
    assert (made["temperature"], made["dense_weight"], made["mixup"]) == (1.0, 0.0, 0)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    a = [np.array([[1.0, 2.0, 3.0]]), np.array([[0.0, 0.0, 5.0]])]
    assert kl_to(a, a) == pytest.approx(0.0, abs=1e-12)
    assert kl_to(a, [x[:, ::-1] for x in a]) > 0.1


def test_recipes_summarize_their_seeds():
    def model(accuracy: float, removed: float) -> dict:
        point = {"accuracy": accuracy, "wrong_where_bundled_right": 100 - accuracy,
                 "margin_price_points": 0.5, "vs_dense_program": removed}
        return {"dense": {"accuracy": 100.0, "kl_to_bundled": 0.01},
                "thresholds": {t: point for t in ("0.9", "0.85", "0.8", "0.75")}}

    out = by_recipe({"A/s0": model(98.0, 0.5), "A/s1": model(96.0, 0.6),
                     "B/s0": model(99.0, 0.4)})
    assert out["A"]["seeds"] == 2 and out["B"]["seeds"] == 1
    assert out["A"]["0.8"]["accuracy"] == {"mean": 97.0, "min": 96.0, "max": 98.0, "n": 2}
    assert out["A"]["0.8"]["vs_dense_program"]["mean"] == pytest.approx(0.55)
