"""Perturbed copies of image calibration inputs, to find the inputs reuse flips (`--augment N`).

A few inputs of a population flip under almost any reuse (on the digits ViT about 1% of its 360
test images: docs/design.md section 6.2); 180 calibration inputs miss all of them 14% of the
time, and a search that sees none of them accepts settings that flip them. Such inputs lie near
the dense model's decision boundary. Small perturbations of the calibration inputs put copies
there too: copy j of input i is input i with Gaussian noise, with its brightness scaled, or
shifted by one pixel (direction drawn), in turn (`PERTURBATIONS`), values clipped to the range of
the calibration inputs. An input counts as flipped when the setting flips it or any of its
copies (`AugmentedEvaluator`), so the loss bound (loss_bound.py) reads per-input losses that
see the neighbourhood of each input, not the point.

Images only: every model input must be float with two trailing spatial dims ([..., H, W]);
anything else is a one-line error (a token id has no meaningful one-pixel shift).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.spls_calibration_inputs import CalibrationData
from esact_cc.tuning.spls_measurement import Measurement

PERTURBATIONS = ("noise", "brightness", "shift")
"""Copy j of an input is perturbed by PERTURBATIONS[j % 3]. The shift comes last: on the 8x8
digits a one-pixel shift is an eighth of the image, and the dense ViT misclassifies 58% of the
shifted copies of its test images (noise: 3.6%, brightness: 2.8%; the images: 2.2%), which is
no longer the neighbourhood of an input."""
NOISE_STD = 0.05
"""Gaussian noise, as a share of the calibration inputs' value range."""
BRIGHTNESS = 0.1
"""Brightness scaled by 1 +- this (sign drawn), about the range's low end."""
AUGMENT_SEED = 0


def check_images(data: CalibrationData) -> None:
    for name, value in data.samples[0].items():
        if not np.issubdtype(value.dtype, np.floating) or value.ndim < 3:
            raise CompileError(f"--augment perturbs images: input '{name}' is "
                               f"{value.dtype} {list(value.shape)}, not float [..., H, W]")


def _shift(image: np.ndarray, rng: np.random.Generator, low: float) -> np.ndarray:
    axis = image.ndim - 1 - int(rng.integers(2))  # W or H
    step = int(rng.choice((-1, 1)))
    out = np.roll(image, step, axis=axis)
    edge = [slice(None)] * image.ndim
    edge[axis] = slice(0, 1) if step == 1 else slice(-1, None)
    out[tuple(edge)] = low  # the row / column rolled in from the other side is background
    return out


def perturb(image: np.ndarray, kind: str, rng: np.random.Generator, low: float,
            high: float) -> np.ndarray:
    """One perturbed copy of `image` (float), values kept in [low, high]."""
    if kind == "shift":
        out = _shift(image, rng, low)
    elif kind == "noise":
        out = image + rng.normal(0.0, NOISE_STD * (high - low), image.shape)
    else:
        out = low + (image - low) * (1.0 + BRIGHTNESS * float(rng.choice((-1, 1))))
    return np.clip(out, low, high).astype(image.dtype)


def augment(data: CalibrationData, copies: int, seed: int = AUGMENT_SEED) -> CalibrationData:
    """`copies` perturbed copies of every sample, input-major (copies of sample 0 first), each
    with its sample's label; the value range is the samples' own."""
    if copies < 1:
        raise CompileError(f"--augment must be >= 1 copies, got {copies}")
    check_images(data)
    names = list(data.samples[0])
    bounds = {n: (float(min(s[n].min() for s in data.samples)),
                  float(max(s[n].max() for s in data.samples))) for n in names}
    rng = np.random.default_rng(seed)
    samples = []
    for sample in data.samples:
        for j in range(copies):
            kind = PERTURBATIONS[j % len(PERTURBATIONS)]
            samples.append({n: perturb(sample[n], kind, rng, *bounds[n]) for n in names})
    labels = None if data.labels is None else np.repeat(data.labels, copies)
    return replace(data, samples=samples, labels=labels,
                   source=f"{data.source} (+{copies} perturbed copies each)")


def check_augment(copies: int, loss_estimate: str) -> None:
    """`--augment N`: N >= 0 copies (0: none), counted by the flips the bound reads."""
    if copies < 0:
        raise CompileError(f"--augment must be >= 0 copies per input, got {copies}")
    if copies and loss_estimate != "flips":
        raise CompileError(f"--augment counts flipped copies; --loss-estimate {loss_estimate} "
                           "prices the inputs' own margins and would not read them")


def budget_screen(budget: float, search) -> Callable[[Measurement], bool]:
    """`AugmentedEvaluator`'s `within_budget` for a search: the bound of `search`
    (spls_tuning.SearchOptions) on the inputs alone within `budget`."""
    from esact_cc.tuning.spls_tuning import BUDGET_SLACK

    def within(m: Measurement) -> bool:
        return m.loss_bound(search.margin_se, search.loss_estimate) <= budget + BUDGET_SLACK
    return within


def grouped_losses(own: np.ndarray, copy_losses: np.ndarray, copies: int) -> np.ndarray:
    """Per input: the largest loss of the input and its `copies` copies (input-major)."""
    return np.maximum(own, copy_losses.reshape(len(own), copies).max(axis=1))


class AugmentedEvaluator:
    """The `Evaluator` esact-tune's search uses, over inputs and their perturbed copies: each
    input's loss is the worst of itself and its copies; accuracy, work and margins are the
    inputs' own (the copies only find losses). `copies_evaluator` measures the copies,
    input-major, compiled from the same program (quantized on the inputs, not the copies).

    `within_budget` (a setting measured on the inputs alone -> may it pass?) spares the copies
    of settings already over budget on the inputs: the worst of an input and its copies is at
    least the input's own loss, so their bound only grows and they stay rejected."""

    def __init__(self, inputs_evaluator, copies_evaluator, copies: int,
                 within_budget: Callable[[Measurement], bool] | None = None):
        self.inputs = inputs_evaluator
        self.copies = copies_evaluator
        self.per_input = copies
        self.within_budget = within_budget
        self.labels = inputs_evaluator.labels
        self.dense_accuracy = inputs_evaluator.dense_accuracy

    @property
    def sample_count(self) -> int:
        return self.inputs.sample_count

    def reuse_off_gap(self, count: int = 4) -> float:
        return self.inputs.reuse_off_gap(count)

    def layer_indices(self, config: SplsConfig) -> list[int]:
        return self.inputs.layer_indices(config)

    def subset(self, indices: Sequence[int]) -> AugmentedEvaluator:
        """The inputs at `indices` and their own copies."""
        copies = [i * self.per_input + j for i in indices for j in range(self.per_input)]
        return AugmentedEvaluator(self.inputs.subset(indices), self.copies.subset(copies),
                                  self.per_input, self.within_budget)

    def measure(self, configs: Sequence[SplsConfig], control: bool = False,
                seed: int = 0) -> list[Measurement]:
        if control:
            raise CompileError("--augment does not run the random-reuse control")
        own = self.inputs.measure(configs)
        screened = [m for m in own if self.within_budget is None or self.within_budget(m)]
        copied = dict(zip((id(m) for m in screened),
                          self.copies.measure([m.config for m in screened]) if screened else []))
        out = []
        for m in own:
            c = copied.get(id(m))
            if c is None:  # over budget on the inputs alone
                out.append(m)
                continue
            losses = grouped_losses(m.sample_losses, c.sample_losses, self.per_input)
            out.append(Measurement(m.config, m.dense_accuracy - float(np.mean(losses)),
                                   m.dense_accuracy, m.work, None, losses, m.label_metric,
                                   m.margin_price))
        return out
