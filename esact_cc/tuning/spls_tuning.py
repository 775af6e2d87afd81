"""SPLS calibration: choose `insert-spls` options per model and per layer under an accuracy budget.

The logic behind `esact-tune`. Everything here sees the CALIBRATION inputs only; held-out
reporting is the caller's (bench/spls_tradeoff.py).

Settings are measured by spls_measurement.py (`SplsEvaluator`: accuracy points, loss, MACs).

Search (`tune`):
1. uniform: the grid `UNIFORM_GRID` of (similarity, attention, hlog-bits, thresholds) at the
   default k-ratio and window; then one coordinate round around the best
   setting within budget over `REFINE_VALUES` (hlog-bits, window, k-ratio where it matters),
   then the finer thresholds crossed with first-reference 0 and 1, keeping a change only if
   it is within budget and reduces more;
2. per layer (deeper layers reuse more), as `SearchOptions` says (defaults below):
   - start: the best uniform setting with first-reference raised to at least
     `layer_first_reference` (default 1: [CLS] / row 0 is never a representative; on MiniLM
     the calibration sentences never show a content row reusing [CLS], but one held-out
     sentence in 96 lost 67 points to it); if that start is over budget (the bound below),
     the best uniform setting of the history within it; else reuse off in every layer;
   - within budget, in both phases: the one-sided `confidence` upper bound of the loss
     (loss_bound.py: mean + z standard errors, Agresti-Min adjusted for labels), default
     `DEFAULT_CONFIDENCE`. Many candidates are compared on one calibration set, so the one
     that just fits on its mean is, more often than not, one whose calibration loss is low by
     luck (docs/design.md 6.2). With labels the per-input
     losses are `loss_estimate`'s: the observed flips (default), or each input's margin
     erosion priced as flips (margin_loss.py), which grows before any prediction flips;
   - strategy `layer_search`: `efficient` (default) takes, each round, over all layers, the
     move (one layer's lower thresholds / larger windows, `layer_steps` nearest, 0 = all) with the
     most reduction gained per point of budget spent; `largest` visits layers L-1..0 and
     takes the value that reduces most within budget, `LAYER_SWEEPS` sweeps (the search of
     before, which spends the budget on the first layer it visits);
   - options varied per layer (`layer_options`): `threshold` (`REUSE_OFF` turns a layer's
     reuse off), `window` (`LAYER_WINDOWS`) and `prediction` (default: threshold and
     prediction). With `prediction`, each layer can also be left without prediction
     (`prediction=off`: exactly the dense layer, no prediction work), and a layer left so can
     be predicted again at any threshold: the reduction counts each predicted layer's
     prediction work (spls_accounting.py, `PREDICTION_MAC_PER_PRODUCT` MACs per HLog
     product) against the work its reuse removes, so the search keeps the prediction only
     where reuse pays for it. It starts from the prediction off in every layer when that
     reduces more (reuse off alone pays a prediction that saves nothing).
   - `layer_screen` `on` (layer_screen.py): before the moves, each layer's thresholds are
     scanned with that layer alone; moves keep every layer at or above its floor and never
     predict a layer screened out, and the start is clamped to the floors; the floors'
     margin is chosen per model by default (screen_margin_choice.py).
   The per-layer setting is written when it reduces more than the uniform one on the
   calibration set, or when the uniform one breaks a screen floor (`TuningResult.best`); with
   confidence 0.5 (the mean), first-reference floor 0, no screen and `largest` the search is
   the one of before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from esact_cc.passes.insert_spls import PREDICTIONS
from esact_cc.runtime.errors import CompileError
from esact_cc.sparsity.spls_options import SplsConfig
from esact_cc.tuning.layer_screen import (
    DEFAULT_LAYER_SCREEN,
    DEFAULT_SCREEN_MARGIN,
    FALLBACK_SCREEN_MARGIN,
    SCREEN_MARGIN_AUTO,
    LayerFloor,
    check_screen,
    describe_floors,
    lone_config,
    scan_layer,
)
from esact_cc.tuning.loss_bound import (
    DEFAULT_CONFIDENCE,
    DEFAULT_LOSS_ESTIMATE,
    check_confidence,
    check_loss_estimate,
    z_score,
)
from esact_cc.tuning.spls_measurement import REUSE_OFF, Evaluator, Measurement, uniform_config
from esact_cc.tuning.spls_setting_text import describe_measurement
from esact_cc.typed_options import unknown_name

UNIFORM_GRID: tuple[tuple[str, str, int, tuple[float, ...]], ...] = (
    # (similarity, attention, hlog-bits, thresholds); text needs 6 bits (docs/design.md section 6)
    ("cosprob", "dense", 4, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "topk", 4, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "dense", 6, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("cosprob", "topk", 6, (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)),
    ("overlap", "dense", 4, (0.5, 0.75, 1.0)),
    ("overlap", "topk", 4, (0.5, 0.75, 1.0)),
)
REFINE_VALUES: dict[str, tuple[Any, ...]] = {
    "hlog-bits": (3, 4, 6),
    "window": (2, 4, 8),
    "k-ratio": (0.1, 0.2, 0.3, 0.5),
}
FINER_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "cosprob": (0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.993, 0.995,
                0.997, 0.998, 0.999),
    "overlap": (0.4, 0.5, 0.6, 0.75, 0.85, 1.0),
}
LAYER_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "cosprob": (0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999,
                REUSE_OFF),
    "overlap": (0.3, 0.4, 0.5, 0.6, 0.75, 0.85, 1.0, REUSE_OFF),
}
LAYER_WINDOWS: tuple[int, ...] = (2, 4, 8, 16)
PER_LAYER_OPTIONS = ("threshold", "window", "prediction")
"""Options the per-layer search can vary (`--layer-options`)."""
DEFAULT_LAYER_OPTIONS: tuple[str, ...] = ("threshold", "prediction")
FIRST_REFERENCE_VALUES: tuple[int, ...] = (0, 1)
"""`first-reference` values crossed with the finer thresholds in the uniform search."""
LAYER_SWEEPS = 2
DEFAULT_LAYER_STEPS = 0
"""`efficient` per-layer search: values tried per layer and option in each round (0: all)."""
DEFAULT_LAYER_SEARCH = "efficient"
DEFAULT_MARGIN_SE = z_score(DEFAULT_CONFIDENCE)
"""Standard errors above the mean loss at the default confidence (the Sanger and SpAtten
searches take the margin in this form)."""
DEFAULT_LAYER_FIRST_REFERENCE = 1
BUDGET_SLACK = 1e-9


def _key(config: SplsConfig) -> str:
    return repr((sorted(config.options.items()),
                 sorted((i, sorted(o.items())) for i, o in config.layers.items())))


def _better(a: Measurement, b: Measurement | None, budget: float, margin_se: float = 0.0,
            estimate: str = "flips") -> bool:
    """a is within budget (mean loss + `margin_se` standard errors, the per-input losses
    `estimate` names) and reduces more than b (ties: higher accuracy)."""
    if a.loss_bound(margin_se, estimate) > budget + BUDGET_SLACK:
        return False
    if b is None:
        return True
    if abs(a.reduction - b.reduction) > 1e-12:
        return a.reduction > b.reduction
    return a.accuracy > b.accuracy


@dataclass
class TuningResult:
    uniform: Measurement
    per_layer: Measurement | None
    history: list[Measurement]
    budget: float
    search: SearchOptions | None = None
    floors: dict[int, LayerFloor] | None = None
    """The layer screen's floors (layer_screen.py; None: no screen)."""
    margin_choice: Any = None
    """`--screen-margin auto`: the held-apart check that chose the margin
    (screen_margin_choice.MarginChoice; None: the margin was given)."""

    @property
    def uniform_admissible(self) -> bool:
        """The uniform setting keeps every layer's screen floor (always, without a screen)."""
        if not self.floors:
            return True
        threshold = self.uniform.config.options["threshold"]
        return all(f.admits(threshold, REUSE_OFF) for f in self.floors.values())

    @property
    def best(self) -> Measurement:
        """The per-layer setting when it reduces more than the uniform one on the calibration
        set (it may not: its first-reference floor can cost reduction), or when the uniform one
        breaks a layer's screen floor."""
        if self.per_layer is not None and (self.per_layer.reduction > self.uniform.reduction
                                           or not self.uniform_admissible):
            return self.per_layer
        return self.uniform

    def config(self, info: Mapping[str, Any]) -> SplsConfig:
        best = self.best
        return SplsConfig(dict(best.config.options), {i: dict(o) for i, o in
                                                      best.config.layers.items()},
                          {**info, "budget_points": self.budget,
                           **(self.search or SearchOptions()).as_dict(),
                           "uniform": self.uniform.as_dict(),
                           "per_layer": self.per_layer.as_dict() if self.per_layer else None,
                           "chosen": "per_layer" if best is self.per_layer else "uniform",
                           "layer_floors": None if self.floors is None else
                           {str(i): f.as_dict() for i, f in sorted(self.floors.items())},
                           "settings_measured": len(self.history),
                           "screen_margin_choice": None if self.margin_choice is None else
                           self.margin_choice.as_dict()})


class _Search:
    def __init__(self, evaluator: Evaluator, budget: float, log: Callable[[str], None],
                 margin_se: float, estimate: str = "flips"):
        self.evaluator = evaluator
        self.budget = budget
        self.margin_se = margin_se
        """Standard errors added to the mean loss before the budget test (0 = the mean)."""
        self.estimate = estimate
        """Which per-input losses the bound reads (loss_bound.LOSS_ESTIMATES)."""
        self.log = log
        self.seen: dict[str, Measurement] = {}
        self.history: list[Measurement] = []
        self.floors: dict[int, LayerFloor] = {}
        """The layer screen's floors (empty: every value admitted)."""

    def admits(self, layer: int, values: Mapping[str, Any]) -> bool:
        """May the per-layer search give `layer` these `values` ({option: value}) under the
        screen? The prediction off and reuse off always; else a threshold down to the layer's
        floor (none for a screened-out layer)."""
        floor = self.floors.get(layer)
        if floor is None or values.get("prediction", "on") == "off":
            return True
        return floor.admits(values["threshold"], REUSE_OFF)

    def admitted(self, layer: int, trial: Mapping[int, Mapping[str, Any]]) -> bool:
        return self.admits(layer, trial[layer])

    def measure(self, configs: Sequence[SplsConfig]) -> list[Measurement]:
        todo = list({_key(c): c for c in configs if _key(c) not in self.seen}.values())
        if todo:
            for m in self.evaluator.measure(todo):
                self.seen[_key(m.config)] = m
                self.history.append(m)
                self.log(describe_measurement(m, self.budget, self.margin_se, self.estimate, BUDGET_SLACK))
        return [self.seen[_key(c)] for c in configs]

    def bound(self, m: Measurement) -> float:
        return m.loss_bound(self.margin_se, self.estimate)

    def fits(self, m: Measurement) -> bool:
        return self.bound(m) <= self.budget + BUDGET_SLACK

    def best_of(self, measurements: Sequence[Measurement],
                current: Measurement | None) -> Measurement | None:
        for m in measurements:
            if _better(m, current, self.budget, self.margin_se, self.estimate):
                current = m
        return current


def search_uniform(search: _Search) -> Measurement:
    grid = [uniform_config(similarity=sim, attention=attn, threshold=thr, hlog_bits=bits)
            for sim, attn, bits, thresholds in UNIFORM_GRID for thr in thresholds]
    best = search.best_of(search.measure(grid), None)
    if best is None:  # nothing within budget: reuse off, dense attention (prediction only)
        search.log("  no uniform setting is within the budget; reuse off")
        return search.measure([uniform_config(threshold=REUSE_OFF)])[0]
    for name, values in REFINE_VALUES.items():
        options = best.config.options
        if name == "k-ratio" and options["attention"] == "dense" \
                and options["similarity"] == "cosprob":
            continue  # k only shapes SPA, which neither dense attention nor cosprob reads
        trials = [SplsConfig(options={**options, name: v}) for v in values]
        best = search.best_of(search.measure(trials), best) or best
    # Last: the thresholds, crossed with first-reference (which lowers reuse at a given
    # threshold, so alone it never wins; its value shows at a lower threshold).
    options = best.config.options
    trials = [SplsConfig(options={**options, "threshold": thr, "first-reference": first})
              for first in FIRST_REFERENCE_VALUES
              for thr in FINER_THRESHOLDS[options["similarity"]]]
    return search.best_of(search.measure(trials), best) or best


def _uniform(options: Mapping[str, Any], name: str) -> Any:
    """The uniform value of a per-layer option (`prediction` defaults to on)."""
    return options.get(name, "on") if name == "prediction" else options[name]


def _thresholds_of(m: Measurement, layers: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per-layer {option: value} of the options the per-layer search varies."""
    return {i: {name: m.config.layers.get(i, {}).get(name, _uniform(m.config.options, name))
                for name in PER_LAYER_OPTIONS} for i in layers}


def _per_layer_config(options: Mapping[str, Any],
                      per_layer: Mapping[int, Mapping[str, Any]]) -> SplsConfig:
    """Options + the per-layer values that differ from the uniform ones (a layer without
    prediction: that alone; its other options would do nothing)."""
    layers = {}
    for i, values in sorted(per_layer.items()):
        if values.get("prediction", "on") == "off":
            values = {"prediction": "off"}
        differing = {k: v for k, v in values.items() if v != _uniform(options, k)}
        if differing:
            layers[i] = differing
    return SplsConfig(options=dict(options), layers=layers)


def _with_value(values: Mapping[int, Mapping[str, Any]], layer: int, name: str,
                value: Any) -> dict[int, dict[str, Any]]:
    """`values` with layer's `name` set to `value`; a threshold or window also turns the
    layer's prediction on (they are what a predicted layer does)."""
    trial = {i: dict(v) for i, v in values.items()}
    trial[layer][name] = value
    if name != "prediction":
        trial[layer]["prediction"] = "on"
    return trial


def prediction_off_everywhere(options: Mapping[str, Any], layers: Sequence[int]) -> SplsConfig:
    """Every layer without prediction: the dense program (reduction 0)."""
    return SplsConfig(options=dict(options), layers={i: {"prediction": "off"} for i in layers})


def per_layer_start(search: _Search, uniform: Measurement, first_reference: int = 0,
                    off_in: Sequence[int] = ()) -> Measurement:
    """Where the per-layer search starts: the tuned uniform setting with first-reference at
    least `first_reference`, if it is within the budget; else the
    uniform setting of the search's history (same first-reference rule) that reduces most
    within it; else reuse off in every layer (the prediction's cost alone). When the search
    may turn the prediction off (`off_in`: every layer), the prediction off everywhere
    replaces that start when it reduces more within budget (reduction 0: uniform settings
    that cost more than they save) and replaces reuse off as the last resort."""
    def raised(m: Measurement) -> SplsConfig:
        options = dict(m.config.options)
        options["first-reference"] = max(int(options.get("first-reference", 0)),
                                         first_reference)
        return SplsConfig(options=options)

    start: Measurement | None = search.measure([raised(uniform)])[0]
    if not search.fits(start):
        uniforms = {_key(raised(m)): raised(m) for m in search.history if not m.config.layers}
        start = search.best_of(search.measure(list(uniforms.values())), None)
    if off_in:  # no prediction anywhere (the dense program): better when every uniform
        # setting within budget costs more than its reuse saves, and the start when none is
        # within it (it loses nothing, even where a bound on few inputs says otherwise)
        dense = search.measure([prediction_off_everywhere(raised(uniform).options, off_in)])[0]
        start = search.best_of([dense], start) or start or dense
    if start is None:
        start = search.measure([SplsConfig(options={**raised(uniform).options,
                                                    "threshold": REUSE_OFF})])[0]
    search.log(f"  per-layer start:"
               f"{describe_measurement(start, search.budget, search.margin_se, search.estimate, BUDGET_SLACK)}")
    return start


def search_per_layer_largest(search: _Search, start: Measurement, layers: Sequence[int],
                             options: SearchOptions) -> Measurement:
    """From the last layer to the first, the value of each per-layer option with the largest
    reduction within budget, that layer alone changing; `LAYER_SWEEPS` sweeps."""
    uniform = start.config.options
    values = _thresholds_of(start, layers)
    best = start
    for _ in range(LAYER_SWEEPS):
        changed = False
        for layer in reversed(layers):
            trials = []
            for name in options.layer_options:
                for value in _layer_values(name, uniform):
                    if value == values[layer][name] and (
                            name == "prediction" or values[layer]["prediction"] == "on"):
                        continue
                    trial = _with_value(values, layer, name, value)
                    if search.admitted(layer, trial):
                        trials.append(_per_layer_config(uniform, trial))
            chosen = search.best_of(search.measure(trials), best)
            if chosen is not None and chosen is not best:
                best, changed = chosen, True
                values = _thresholds_of(best, layers)
        if not changed:
            break
    return best


def _layer_values(name: str, options: Mapping[str, Any]) -> tuple[Any, ...]:
    if name == "threshold":
        return LAYER_THRESHOLDS[options["similarity"]]
    if name == "prediction":
        return PREDICTIONS
    return LAYER_WINDOWS


def _moves(now: Mapping[str, Any], name: str, uniform: Mapping[str, Any],
           steps: int | None) -> list[Any]:
    """Values of `name` one step of the efficient search tries from a layer's values `now`:
    toward more reuse (lower thresholds, larger windows, the `steps` nearest), the prediction
    off; from a layer without prediction, the prediction back on at each threshold (highest
    first) or window."""
    ladder = _layer_values(name, uniform)
    if name == "prediction":
        return ["off"] if now["prediction"] == "on" else []
    if now["prediction"] == "off":
        return [v for v in ladder if v != REUSE_OFF][::-1][:steps] if name == "threshold" \
            else []
    current = now[name]
    return ([v for v in ladder if v < current][::-1][:steps] if name == "threshold"
            else [v for v in ladder if v > current][:steps])


def search_per_layer_efficient(search: _Search, start: Measurement, layers: Sequence[int],
                               options: SearchOptions) -> Measurement:
    """Greedy by price: each round tries, in every layer, the values of each per-layer option
    in the direction of more reuse (lower threshold, larger window; the next
    `options.layer_steps` of them, 0 = all: a lower threshold can cost less than a higher
    one, as reuse decisions change what later layers see), and
    takes the move with the most reduction gained per point of budget spent (loss + margin);
    moves that spend nothing come first, by gain. Stops when no move gains within budget.
    Cheap reuse is taken before expensive reuse, instead of the first layer visited spending
    the whole budget."""
    uniform = start.config.options
    steps = options.layer_steps or None  # 0: every value
    current = start
    while True:
        values = _thresholds_of(current, layers)
        moved = [(layer, _with_value(values, layer, name, value))
                 for layer in layers for name in options.layer_options
                 for value in _moves(values[layer], name, uniform, steps)]
        trials = [_per_layer_config(uniform, trial) for layer, trial in moved
                  if search.admitted(layer, trial)]
        spent_now = search.bound(current)
        best_move, best_rank = None, (0, 0.0)
        for m in search.measure(trials):
            gain = m.reduction - current.reduction
            if gain <= 1e-12 or not search.fits(m):
                continue
            spent = search.bound(m) - spent_now
            rank = (1, gain) if spent <= 0 else (0, gain / spent)
            if best_move is None or rank > best_rank:
                best_move, best_rank = m, rank
        if best_move is None:
            return current
        current = best_move


def screen_layers(search: _Search, options: Mapping[str, Any], layers: Sequence[int],
                  margin: int, can_turn_off: bool) -> dict[int, LayerFloor]:
    """Each layer's floor (layer_screen.py): its ladder scanned with the layer alone (the
    others without prediction, or with reuse off when the search may not turn it off)."""
    ladder = [t for t in LAYER_THRESHOLDS[options["similarity"]] if t != REUSE_OFF]
    others = {"prediction": "off"} if can_turn_off else {"threshold": REUSE_OFF}
    floors = {}
    for layer in layers:
        def probe(thresholds: Sequence[float], layer: int = layer) -> list[Measurement]:
            return search.measure([lone_config(options, layer, t, layers, others)
                                   for t in thresholds])
        floors[layer] = scan_layer(layer, ladder, probe, search.fits, margin, can_turn_off)
    search.log("  " + describe_floors(floors))
    return floors


def clamp_to_floors(search: _Search, start: Measurement, layers: Sequence[int],
                    options: SearchOptions) -> Measurement:
    """The per-layer start with every layer at or above its floor: a threshold below it raised
    to it, a screened-out layer without prediction (reuse off where the prediction cannot be
    turned off). If that is over budget: the prediction off (or reuse off) everywhere."""
    uniform = start.config.options
    values = _thresholds_of(start, layers)
    can_turn_off = "prediction" in options.layer_options
    for layer in layers:
        if search.admits(layer, values[layer]):
            continue
        floor = search.floors[layer].threshold
        if floor is not None:
            values[layer]["threshold"] = floor
        elif can_turn_off:
            values[layer]["prediction"] = "off"
        else:
            values[layer]["threshold"] = REUSE_OFF
    clamped = search.measure([_per_layer_config(uniform, values)])[0]
    if search.fits(clamped):
        return clamped
    fallback = (prediction_off_everywhere(uniform, layers) if can_turn_off else
                SplsConfig(options={**uniform, "threshold": REUSE_OFF}))
    return search.measure([fallback])[0]


LAYER_SEARCHES: dict[str, Callable[..., Measurement]] = {
    "largest": search_per_layer_largest,
    "efficient": search_per_layer_efficient,
}
"""Per-layer search strategies (`--layer-search`)."""


@dataclass(frozen=True)
class SearchOptions:
    """How the search accepts and the per-layer phase searches (esact-tune's `--confidence`,
    `--layer-search`, `--layer-options`, `--layer-first-reference`); the defaults are the
    module constants."""

    confidence: float = DEFAULT_CONFIDENCE
    """Settings must keep the one-sided `confidence` upper bound of their loss within budget
    (loss_bound.py; 0.5: the calibration mean)."""
    layer_search: str = DEFAULT_LAYER_SEARCH
    """A key of `LAYER_SEARCHES`."""
    layer_options: tuple[str, ...] = DEFAULT_LAYER_OPTIONS
    """Per-layer options varied: some of `PER_LAYER_OPTIONS`."""
    layer_first_reference: int = DEFAULT_LAYER_FIRST_REFERENCE
    """first-reference of the per-layer settings is at least this."""
    layer_steps: int = DEFAULT_LAYER_STEPS
    """`efficient`: values of an option tried per layer and round, nearest first (0: all)."""
    loss_estimate: str = DEFAULT_LOSS_ESTIMATE
    """With labels, the per-input losses the bound reads: observed flips, or each input's
    margin erosion priced as flips (loss_bound.LOSS_ESTIMATES, margin_loss.py)."""
    layer_screen: str = DEFAULT_LAYER_SCREEN
    """`on`: each layer's threshold floor from its reuse alone, before the per-layer search
    (layer_screen.py); `off`: none."""
    screen_margin: int | str = DEFAULT_SCREEN_MARGIN
    """Ladder steps a layer's floor keeps above the threshold where its scan broke, or "auto":
    chosen per model by a held-apart check on the calibration inputs (screen_margin_choice.py)."""

    @property
    def margin_se(self) -> float:
        """Standard errors above the mean loss the bound adds (0 at confidence 0.5)."""
        return z_score(self.confidence)

    def validate(self) -> None:
        check_confidence(self.confidence)
        check_loss_estimate(self.loss_estimate)
        check_screen(self.layer_screen, self.screen_margin)
        if self.layer_search not in LAYER_SEARCHES:
            raise CompileError("--layer-search: " + unknown_name(
                "per-layer search", self.layer_search, LAYER_SEARCHES))
        if not self.layer_options:
            raise CompileError(f"--layer-options: per-layer options must be some of "
                               f"{', '.join(PER_LAYER_OPTIONS)}, got none")
        for name in self.layer_options:
            if name not in PER_LAYER_OPTIONS:
                raise CompileError("--layer-options: " + unknown_name(
                    "per-layer option", name, PER_LAYER_OPTIONS))
        if self.layer_steps < 0:
            raise CompileError(f"per-layer steps must be >= 0, got {self.layer_steps}")
        if self.layer_first_reference < 0:
            raise CompileError(f"per-layer first-reference must be >= 0, got "
                               f"{self.layer_first_reference}")

    def as_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "margin_se": self.margin_se,
                "loss_estimate": self.loss_estimate,
                "layer_search": self.layer_search,
                "layer_options": list(self.layer_options),
                "layer_first_reference": self.layer_first_reference,
                "layer_steps": self.layer_steps, "layer_screen": self.layer_screen,
                "screen_margin": self.screen_margin}


def tune(evaluator: Evaluator, budget: float, per_layer: bool = True,
         log: Callable[[str], None] | None = None,
         search: SearchOptions | None = None) -> TuningResult:
    """Search uniform, then per-layer settings within `budget` accuracy points (calibration),
    the per-layer phase as `search` says; `screen_margin` "auto": the margin chosen first by
    the held-apart check of screen_margin_choice.py, then this search with it."""
    options = search or SearchOptions()
    options.validate()
    if not (math.isfinite(budget) and budget >= 0):
        raise CompileError(f"budget must be a finite number of points >= 0, got {budget}")
    log = log or (lambda message: None)
    auto = options.screen_margin == SCREEN_MARGIN_AUTO
    if not auto or not (per_layer and options.layer_screen == "on" and  # a screen to set
                        len(evaluator.layer_indices(uniform_config())) > 1):
        margin = FALLBACK_SCREEN_MARGIN if auto else options.screen_margin
        return search_at_margins(evaluator, budget, log, options, (margin,), per_layer)[0]
    from esact_cc.tuning.screen_margin_choice import choose_screen_margin

    choice = choose_screen_margin(evaluator, budget, options, log)
    result = search_at_margins(evaluator, budget, log, options, (choice.margin,))[0]
    result.margin_choice = choice
    return result


def search_at_margins(evaluator: Evaluator, budget: float, log: Callable[[str], None],
                      options: SearchOptions, margins: Sequence[int],
                      per_layer: bool = True) -> list[TuningResult]:
    """The search once per layer-screen margin of `margins`: the uniform phase, the per-layer
    start and the screen's scans are shared (measured once), the floors and the per-layer
    phase are each margin's."""
    state = _Search(evaluator, budget, log, options.margin_se, options.loss_estimate)
    labels = evaluator.labels is not None
    priced = (("flipped predictions" if options.loss_estimate == "flips" else
               "margin erosion priced as flips") if labels else "cosine losses")
    log(f"uniform search ({'accuracy' if labels else 'cosine'} "
        f"x100, dense {evaluator.dense_accuracy:.3f}, budget {budget} points on the "
        f"{options.confidence:g} upper bound of the loss: mean + {options.margin_se:.3g} "
        f"standard errors of the per-input {priced})")
    gap = evaluator.reuse_off_gap()
    if gap > 0:
        log(f"warning: with reuse off the SPLS program differs from dense by up to {gap:.3g}: "
            "losses include that error, not only SPLS's")
    uniform = search_uniform(state)
    layers = evaluator.layer_indices(uniform.config)
    if not (per_layer and len(layers) > 1):
        return [TuningResult(uniform, None, state.history, budget, options)]
    log(f"per-layer {', '.join(options.layer_options)} ({options.layer_search}; "
        f"first-reference >= {options.layer_first_reference})")
    can_turn_off = "prediction" in options.layer_options
    start = per_layer_start(state, uniform, options.layer_first_reference,
                            layers if can_turn_off else ())
    results = []
    for margin in margins:
        at_margin = replace(options, screen_margin=margin)
        result = TuningResult(uniform, None, [], budget, at_margin)
        begin = start
        if options.layer_screen == "on":
            state.floors = screen_layers(state, start.config.options, layers, margin,
                                         can_turn_off)
            result.floors = state.floors
            begin = clamp_to_floors(state, start, layers, at_margin)
        chosen = LAYER_SEARCHES[options.layer_search](state, begin, layers, at_margin)
        result.per_layer = chosen if chosen.config.layers else None
        result.history = list(state.history)
        results.append(result)
    return results
