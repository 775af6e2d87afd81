"""The per-layer screen of esact-tune's search (`--layer-screen`): how much reuse each layer may
take, measured on that layer alone, before layers are combined.

Why: the per-layer search compares 100-300 settings on one calibration set and ends on the most
aggressive one it cannot tell from safe; a layer whose reuse flips inputs near the decision
boundary at one threshold is taken at the next threshold up, where the calibration inputs (and
their copies) happen to flip nothing, and the held-apart inputs flip again (docs/design.md
section 6.2: on the digits ViT, layer 0 alone at 0.999 flips one held-apart image, at 0.998 two,
at 0.995 copies of 8 calibration images). The screen asks each layer once, alone:

- probe: the layer at each threshold of its ladder, from the highest down, every other layer
  without prediction (the dense program elsewhere), measured like any setting (the bound of the
  search, with the copies of `--augment`); the scan stops at the first threshold over budget
  (a search that may not turn the prediction off, `--layer-options` without `prediction`,
  probes with reuse off elsewhere instead, and has no "pays alone" test);
- floor: the lowest threshold the scan passed, moved `margin` steps up the ladder when the scan
  stopped (the last threshold within budget before a break is within it by luck as often as the
  search's own edge: the same selection, one layer at a time); a layer whose scan passes no
  threshold, or whose floor's reuse does not pay for its prediction alone (reduction <= 0
  against the dense program), is not predicted at all; the margin is chosen per model by
  default (`--screen-margin auto`, screen_margin_choice.py);
- the per-layer search then moves each layer only down to its floor and never predicts a
  screened-out layer; its start is clamped to the floors.

The probes are settings like the others (the search's memo and history hold them), about
3-10 per layer: the scan stops at the first break.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig

SCREEN_MODES = ("off", "on")
"""`--layer-screen`: no screen (the search of before), or the screen above."""
DEFAULT_LAYER_SCREEN = "on"
"""On the digits ViT (1-point budget, confidence 0.9, 180 images calibrate, 180 held apart, three
splits) the search without it lost 2.78 / 1.11 / 2.78 points held apart; with it, margin 3:
0 / 0 / 0 at 15.1% of the dense program removed (docs/design.md section 6.2;
bench/results/tune_confidence_digits_layer_screen.json)."""
SCREEN_MARGIN_AUTO = "auto"
"""`--screen-margin auto`: the margin chosen per model by a held-apart check on the calibration
inputs (screen_margin_choice.py) among `AUTO_MARGINS`."""
DEFAULT_SCREEN_MARGIN: int | str = SCREEN_MARGIN_AUTO
"""One margin for every model was too cautious for one and just right for another: on
all-MiniLM-L6-v2 at 128 real tokens margin 3 stops layer 5 at 0.93 (1.0084x dense cycles held
apart), margin 1 reaches 0.85 (0.9960x) within the cosine budget (docs/design.md 6.3)."""
FALLBACK_SCREEN_MARGIN = 3
"""The margin when the check cannot choose (fewer calibration inputs than it splits, or no
candidate keeps the budget on its check part). On the digits ViT (1-point budget, confidence
0.9, 180 images calibrate, 180 held apart, three splits) margin 1 lost 1.11 / 0 / 0.56 points
held apart (18.2% removed), margin 2 0.56 / 0 / 1.67 (17.1%), margin 3 0 / 0 / 0 (15.1%): the
smallest that kept the budget on all three (the fixed default until the check)."""
AUTO_MARGINS: tuple[int, ...] = tuple(range(FALLBACK_SCREEN_MARGIN + 1))
"""Margins the check tries, the most reuse first."""
PROBE_CHUNK = 3
"""Thresholds measured per call while scanning (one call shares the interpreter's memo of the
dense layers before the probed one; a larger chunk wastes probes past the break)."""


def check_screen(mode: str, margin: int | str) -> None:
    from esact_cc.typed_options import unknown_name

    if mode not in SCREEN_MODES:
        raise CompileError("--layer-screen: " + unknown_name("layer screen", mode, SCREEN_MODES))
    if margin == SCREEN_MARGIN_AUTO:
        return
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise CompileError(f"--screen-margin must be >= 0 ladder steps or "
                           f"'{SCREEN_MARGIN_AUTO}', got {margin}")


@dataclass(frozen=True)
class LayerFloor:
    """What the screen allows one layer: reuse down to `threshold`, or no prediction (None)."""

    layer: int
    threshold: float | None
    passed: tuple[float, ...]
    """Thresholds the layer alone kept within budget, highest first."""
    broke_at: float | None
    """The first threshold of the scan over budget (None: the whole ladder passed)."""
    reduction: float | None
    """The layer alone at its floor: reduction of the whole program (None: screened out)."""

    def admits(self, threshold: float, reuse_off: float) -> bool:
        """May the search put this layer at `threshold` (reuse off: always)?"""
        if threshold == reuse_off:
            return True
        return self.threshold is not None and threshold >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {"floor": self.threshold, "passed": list(self.passed), "broke_at": self.broke_at,
                "reduction_alone": self.reduction}


def floor_of(layer: int, passed: Sequence[float], broke_at: float | None,
             reductions: Mapping[float, float], margin: int, must_pay: bool = True) -> LayerFloor:
    """The layer's floor from its scan: `passed` (descending thresholds within budget, the
    scan's prefix), where it broke, and the lone reduction of each passed threshold;
    `must_pay`: the floor's reduction must be above the dense program's (0)."""
    kept = list(passed)
    if broke_at is not None and margin:
        kept = kept[:max(len(kept) - margin, 0)]
    if not kept or (must_pay and reductions[kept[-1]] <= 0.0):
        return LayerFloor(layer, None, tuple(passed), broke_at, None)
    return LayerFloor(layer, kept[-1], tuple(passed), broke_at, reductions[kept[-1]])


def scan_layer(layer: int, ladder: Sequence[float],
               probe: Callable[[Sequence[float]], Sequence[Any]],
               fits: Callable[[Any], bool], margin: int, must_pay: bool = True) -> LayerFloor:
    """Scan `ladder` (thresholds, any order; reuse off left out by the caller) from the highest
    down with `probe` (thresholds -> measurements of the layer alone), `PROBE_CHUNK` at a time,
    stopping at the first measurement over budget."""
    order = sorted(ladder, reverse=True)
    passed: list[float] = []
    reductions: dict[float, float] = {}
    broke_at = None
    for start in range(0, len(order), PROBE_CHUNK):
        chunk = order[start:start + PROBE_CHUNK]
        for threshold, m in zip(chunk, probe(chunk)):
            if not fits(m):
                broke_at = threshold
                break
            passed.append(threshold)
            reductions[threshold] = m.reduction
        if broke_at is not None:
            break
    return floor_of(layer, passed, broke_at, reductions, margin, must_pay)


def lone_config(options: Mapping[str, Any], layer: int, threshold: float,
                layers: Sequence[int], others: Mapping[str, Any] | None = None) -> SplsConfig:
    """`layer` at `threshold`, every other layer of `layers` as `others` says (default: without
    prediction; a search that may not turn the prediction off passes reuse off, the same
    outputs)."""
    others = others or {"prediction": "off"}
    overrides = {i: dict(others) for i in layers if i != layer}
    overrides[layer] = {"threshold": threshold}
    if options.get("prediction", "on") == "off":
        overrides[layer]["prediction"] = "on"
    return SplsConfig(options=dict(options), layers=overrides)


def describe_floors(floors: Mapping[int, LayerFloor]) -> str:
    parts = []
    for i, f in sorted(floors.items()):
        where = "no prediction" if f.threshold is None else f"down to {f.threshold:g}"
        broke = "" if f.broke_at is None else f", alone over budget at {f.broke_at:g}"
        parts.append(f"{i}: {where}{broke}")
    return "layer screen: " + "; ".join(parts)
