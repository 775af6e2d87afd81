"""bench/spls_digits_held_apart_frontier.py: each fold chooses on its half and reports on the
other, the bundled model dense when nothing is within budget; bench/spls_digits_tune_folds.py's
pooling of esact-tune's two folds (synthetic studies, no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from spls_digits_held_apart_frontier import held_apart


def partition() -> dict:
    """Two halves of 10 images, the bundled model dense right on all of them. '0.9' loses
    nothing on half 0 and 2 images on half 1; '0.8' loses 1 image on each."""
    halves = [{"0.9": {"right": "1111111111", "vs_dense_program": 0.4},
               "0.8": {"right": "1111111110", "vs_dense_program": 0.5}},
              {"0.9": {"right": "1111111100", "vs_dense_program": 0.4},
               "0.8": {"right": "0111111111", "vs_dense_program": 0.5}}]
    return {"frontier": halves, "int8_dense_bundled_accuracy": [100.0, 100.0]}


def test_nothing_within_budget_keeps_the_bundled_model_dense():
    point = held_apart(partition(), budget=0.0)
    # fold 0 may take 0.9 (no loss on half 0) and pays 2 images on half 1; fold 1 sees
    # 0.9's loss and 0.8's and keeps the bundled model dense.
    assert [f["choice"] for f in point["folds"]] == ["0.9", "bundled dense"]
    assert point["loss_points"] == pytest.approx(100.0 * 2 / 20)
    assert point["removed_vs_dense_program"] == pytest.approx(0.4 / 2)


def test_a_larger_budget_takes_the_most_removing_setting_and_reports_it_apart():
    point = held_apart(partition(), budget=10.0)
    assert [f["choice"] for f in point["folds"]] == ["0.8", "0.8"]
    assert [f["reported_loss_points"] for f in point["folds"]] == [10.0, 10.0]
    assert point["accuracy"] == pytest.approx(90.0)
    assert point["removed_vs_dense_program"] == pytest.approx(0.5)


def test_esact_tune_folds_pool_to_every_test_image_once():
    from spls_digits_tune_folds import pooled

    def fold(reported: str, bundled: str, own: str, removed: float) -> dict:
        return {"reported": {"right": reported, "vs_dense_program": removed,
                             "vs_full_dense_model": removed + 0.1},
                "bundled_right_reported_half": bundled, "own_dense_right_reported_half": own}

    out = pooled([fold("1110", "1111", "1111", 0.5), fold("111111", "111110", "111100", 0.3)])
    assert out["inputs"] == 10 and out["accuracy"] == pytest.approx(90.0)
    # bundled right on 9, the choices on 9: no net loss; the model's own dense on 8
    assert out["loss_points_vs_bundled_dense_int8"] == pytest.approx(0.0)
    assert out["own_dense_loss_points_vs_bundled"] == pytest.approx(10.0)
    assert out["removed_vs_dense_program"] == pytest.approx((4 * 0.5 + 6 * 0.3) / 10)
