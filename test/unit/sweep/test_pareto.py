"""Pareto fronts: hand-made points, minimised objectives, per model and input."""

from __future__ import annotations

import numpy as np

from esact_cc.sweep.pareto import mark_fronts, non_dominated


def test_non_dominated_points() -> None:
    values = np.array([[1, 5, 0.0], [2, 2, 0.0], [3, 3, 0.0], [5, 1, 0.1], [2, 2, 0.0]])
    # [3,3] is beaten by [2,2]; equal points do not dominate each other
    assert non_dominated(values).tolist() == [True, True, False, True, True]


def test_fronts_are_per_model_and_input() -> None:
    rows = [{"model": m, "input": 0, "total.cycles": c, "energy.system.energy_pj": e,
             "accuracy_loss": 0.0} for m, c, e in
            [("a", 1, 9), ("a", 2, 10), ("b", 5, 50), ("b", 6, 40)]]
    mark_fronts(rows)
    assert [r["pareto_front"] for r in rows] == [True, False, True, True]
