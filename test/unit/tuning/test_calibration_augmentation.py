"""esact-tune --augment (esact_cc/tuning/calibration_augmentation.py): perturbed copies of image
calibration inputs, and an input counted as flipped when it or any of its copies flips, so a
setting that flips no calibration input but flips its near neighbours is charged."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.errors import CompileError

from esact_cc.tuning.calibration_augmentation import (
    AugmentedEvaluator,
    augment,
    budget_screen,
    check_augment,
    grouped_losses,
    perturb,
)
from esact_cc.tuning.spls_accounting import WorkSummary
from esact_cc.tuning.spls_calibration_inputs import CalibrationData
from esact_cc.tuning.spls_measurement import Measurement, uniform_config
from esact_cc.tuning.spls_tuning import SearchOptions


def images(count: int) -> CalibrationData:
    rng = np.random.default_rng(3)
    samples = [{"x": rng.uniform(0.0, 1.0, (1, 1, 8, 8)).astype(np.float32)}
               for _ in range(count)]
    return CalibrationData(samples, np.arange(count) % 10, "images.npz")


def test_copies_are_input_major_labelled_in_range_and_deterministic():
    data = images(4)
    copies = augment(data, 3)
    assert len(copies.samples) == 12
    assert copies.labels.tolist() == np.repeat(data.labels, 3).tolist()
    for i, sample in enumerate(copies.samples):
        x = sample["x"]
        assert x.dtype == np.float32 and x.shape == (1, 1, 8, 8)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert not np.array_equal(x, data.samples[i // 3]["x"]), "a copy equals its input"
    again = augment(data, 3)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(copies.samples, again.samples))


def test_a_shift_moves_the_image_one_pixel_and_fills_with_the_low_end():
    image = np.zeros((1, 1, 8, 8), np.float32)
    image[0, 0, 3, 4] = 1.0
    image[0, 0, 0, :] = 0.5  # an edge row: rolled off or out, never wrapped around
    for seed in range(8):
        out = perturb(image, "shift", np.random.default_rng(seed), 0.0, 1.0)
        moved = np.argwhere(out[0, 0] == 1.0).tolist()
        assert len(moved) == 1
        assert abs(moved[0][0] - 3) + abs(moved[0][1] - 4) == 1
        assert np.count_nonzero(out == 0.5) in (0, 7, 8)  # up: off; sideways: 7 left
        assert not np.any(out[0, 0, 7] == 0.5), "the top row wrapped to the bottom"


def test_only_float_images_are_augmented():
    tokens = CalibrationData([{"ids": np.zeros((1, 16), np.int64)}], np.array([0]), "t.npz")
    with pytest.raises(CompileError, match="--augment perturbs images: input 'ids'"):
        augment(tokens, 2)
    with pytest.raises(CompileError, match=">= 1 copies"):
        augment(images(2), 0)


def test_augment_option_checks():
    check_augment(0, "margins")
    check_augment(4, "flips")
    with pytest.raises(CompileError, match=">= 0"):
        check_augment(-1, "flips")
    with pytest.raises(CompileError, match="--loss-estimate margins"):
        check_augment(2, "margins")


def test_an_input_loses_what_its_worst_copy_loses():
    own = np.array([0.0, 0.0, -100.0, 100.0])
    copies = np.array([0, 0, 100, 0, 0, 0, -100, -100, -100, 0, 0, 0], float)
    assert grouped_losses(own, copies, 3).tolist() == [100.0, 0.0, -100.0, 100.0]


class FixedLosses:
    """An evaluator whose settings (by threshold) lose fixed per-input points; records what it
    was asked to measure."""

    def __init__(self, losses: dict[float, list[float]]):
        self.losses = losses
        self.labels = np.zeros(len(next(iter(losses.values()))), np.int64)
        self.dense_accuracy = 100.0
        self.asked: list[float] = []

    @property
    def sample_count(self) -> int:
        return len(self.labels)

    def measure(self, configs, control=False, seed=0):
        out = []
        for config in configs:
            threshold = config.options["threshold"]
            self.asked.append(threshold)
            losses = np.asarray(self.losses[threshold], float)
            out.append(Measurement(config, 100.0 - losses.mean(), 100.0, WorkSummary([]), None,
                                   losses, True))
        return out


def test_copies_charge_a_setting_and_spare_the_ones_already_over_budget():
    n = 300  # no flip among 300 inputs bounds the loss at 0.42 points (confidence 0.9)
    inputs = FixedLosses({0.9: [0.0] * n, 0.5: [100.0] * 3 + [0.0] * (n - 3)})
    copies = FixedLosses({0.9: [0.0] * (2 * n - 4) + [100.0] * 4,
                          0.5: [100.0] * (2 * n)})
    z = SearchOptions().margin_se
    alone = inputs.measure([uniform_config(threshold=0.9)])[0]
    assert alone.loss_bound(z) <= 1.0, "the setting fails without copies: test is vacuous"
    evaluator = AugmentedEvaluator(inputs, copies, 2, budget_screen(1.0, SearchOptions()))
    charged, over = evaluator.measure([uniform_config(threshold=0.9),
                                       uniform_config(threshold=0.5)])
    assert copies.asked == [0.9], "the copies of a setting over budget were measured"
    assert over.loss_bound(z) > 1.0 and over.loss == pytest.approx(1.0)
    # copies 596, 597 (input 298) and 598, 599 (input 299) flipped
    assert charged.sample_losses.tolist() == [0.0] * (n - 2) + [100.0] * 2
    assert charged.loss == pytest.approx(200.0 / n)
    assert charged.loss_bound(z) > 1.0, "flipped copies did not charge"
