"""bench/tune_confidence_rules.py: the grid of per-layer settings, its one-step-safer ladder, and
the pick (most removed among the settings a rule accepts on the calibration images)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from esact_cc.tuning.spls_accounting import COMPONENTS, LayerWork

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("tune_confidence_rules",
                                              ROOT / "bench" / "tune_confidence_rules.py")
RULES = importlib.util.module_from_spec(spec)
assert spec.loader is not None
spec.loader.exec_module(RULES)


def test_the_grid_leaves_out_the_dense_program_and_names_each_layer():
    grid = RULES.grid()
    assert len(grid) == 2 * 4 * 5 - 1 + len(RULES.EARLIER)
    assert "off/off/off" not in grid
    config = grid["off/0.95/0.6"]
    assert config.layers == {0: {"prediction": "off"}, 1: {"threshold": 0.95},
                             2: {"threshold": 0.6}}
    assert grid["0.997/off/0.9"].layers == {1: {"prediction": "off"}, 2: {"threshold": 0.9}}


def test_one_step_safer_moves_every_layer_toward_off():
    assert RULES.one_step_safer("0.997/0.9/0.6") == "off/0.95/0.7"
    assert RULES.one_step_safer("off/0.99/off") is None  # that is the dense program
    assert RULES.one_step_safer("chosen test[:180]") is None


class FakeLosses:
    def __init__(self, bounds: dict[str, float], reductions: dict[str, float]):
        self.bounds = bounds
        component = COMPONENTS[0]
        self.works = {n: [[LayerWork(dense={component: 100.0},
                                     executed={component: 100.0 * (1 - r)})]] * 4
                      for n, r in reductions.items()}

    def bound(self, name, grouped, z, indices):
        return self.bounds[name]


def test_the_pick_removes_most_among_the_accepted():
    losses = FakeLosses({"a": 0.5, "b": 1.5, "c": 0.9}, {"a": 0.1, "b": 0.4, "c": 0.2})
    assert RULES.pick(losses, ["a", "b", "c"], False, 0.0, np.arange(4)) == "c"
    losses.bounds = {"a": 2.0, "b": 1.5, "c": 1.1}
    assert RULES.pick(losses, ["a", "b", "c"], False, 0.0, np.arange(4)) is None
