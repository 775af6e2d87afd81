"""esact-tune's `--screen-margin auto` (the default): the layer screen's margin chosen per model
by a held-apart check on the model's own calibration inputs.

Why: the margin (ladder steps a layer's floor keeps above the threshold where its lone scan
broke, layer_screen.py) guards against settings that keep the budget on the calibration inputs
by luck; how much guard a model needs depends on the model. Margin 3 kept the digits ViT's
budget held apart where 1 and 2 did not, and stopped all-MiniLM-L6-v2 at 128 real tokens at a
threshold whose prediction costs more cycles than it saves, where margin 1 kept the cosine
budget held apart (docs/design.md 6.2, 6.3). So the calibration inputs decide:

1. split: every `CHECK_EVERY`-th calibration input (indices 3, 7, 11, ...) is the check part,
   the rest the fit part. A quarter, not a half: the fit part's bound stays near the whole
   set's (labels, confidence 0.9: a setting that flips none of 135 inputs is bounded at 0.93
   points, within a 1-point budget; of 90 at 1.39, so a half of 180 digits images would admit
   no reuse at all and every margin would look the same);
2. the search on the fit part, once per margin of `AUTO_MARGINS` (the uniform phase, the
   per-layer start and the screen's scans measured once; spls_tuning.search_at_margins);
3. each margin's chosen setting measured on the check part, accepted when its mean loss there
   is within the budget (the held-apart loss, what a budget is reported against; the bound is
   the search's guard on the inputs it selected on);
4. the smallest accepted margin (the most reuse the check allows); none accepted, or fewer than
   `CHECK_EVERY` inputs (no check part): `FALLBACK_SCREEN_MARGIN`, said in the log and report;
5. then the search on all the calibration inputs with that margin (what esact-tune writes).
Deterministic: a fixed split, the search's own order. The config's `screen_margin_choice` holds
the split, each margin's floors, setting, fit and check numbers, and why the margin was chosen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from esact_cc.tuning.layer_screen import AUTO_MARGINS, FALLBACK_SCREEN_MARGIN
from esact_cc.tuning.spls_setting_text import setting_text
from esact_cc.tuning.spls_tuning import BUDGET_SLACK, search_at_margins

CHECK_EVERY = 4
"""Every 4th calibration input is held apart for the check (see the module docstring)."""


def split_inputs(count: int) -> tuple[list[int], list[int]]:
    """(fit, check) indices of `count` calibration inputs: every `CHECK_EVERY`-th is checked."""
    check = [i for i in range(count) if i % CHECK_EVERY == CHECK_EVERY - 1]
    return [i for i in range(count) if i % CHECK_EVERY != CHECK_EVERY - 1], check


@dataclass(frozen=True)
class MarginChoice:
    margin: int
    reason: str
    fit_inputs: int = 0
    check_inputs: tuple[int, ...] = ()
    candidates: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """Per margin tried: its floors, the fit part's choice and its loss on the check part."""

    def as_dict(self) -> dict[str, Any]:
        return {"requested": "auto", "margin": self.margin, "reason": self.reason,
                "procedure": f"search on the fit part (all but every {CHECK_EVERY}th input) at "
                             f"margins {list(AUTO_MARGINS)}; smallest whose setting keeps the "
                             f"mean loss on the check part within budget; then the search on "
                             f"all inputs at that margin",
                "fit_inputs": self.fit_inputs, "check_inputs": list(self.check_inputs),
                "candidates": list(self.candidates)}


def choose_screen_margin(evaluator: Any, budget: float, options: Any,
                         log: Callable[[str], None]) -> MarginChoice:
    """The margin `--screen-margin auto` runs the search with (module docstring)."""
    fit, check = split_inputs(evaluator.sample_count)
    if not check:
        log(f"screen margin auto: {evaluator.sample_count} calibration inputs leave no check "
            f"part (every {CHECK_EVERY}th input): margin {FALLBACK_SCREEN_MARGIN}")
        return MarginChoice(FALLBACK_SCREEN_MARGIN,
                            f"fewer than {CHECK_EVERY} calibration inputs: no check part")
    log(f"screen margin auto: searching on {len(fit)} fit inputs at margins "
        f"{', '.join(map(str, AUTO_MARGINS))}; checking on {len(check)} held apart "
        f"(inputs {check[0]}, {check[1] if len(check) > 1 else ''}... every {CHECK_EVERY}th)")
    results = search_at_margins(evaluator.subset(fit), budget,
                                lambda message: log("  [fit] " + message),
                                replace(options, screen_margin=AUTO_MARGINS[0]), AUTO_MARGINS)
    held = evaluator.subset(check)
    configs = {_key(r.best): r.best.config for r in results}
    checked = dict(zip(configs, held.measure(list(configs.values()))))
    candidates, chosen = [], None
    for margin, result in zip(AUTO_MARGINS, results):
        on_check = checked[_key(result.best)]
        ok = on_check.loss <= budget + BUDGET_SLACK
        candidates.append(candidate(margin, result, on_check, ok))
        log(f"screen margin {margin}: {setting_text(result.best)}: fit loss "
            f"{result.best.loss:+.3f}, reduction {result.best.reduction:.2%}; check loss "
            f"{on_check.loss:+.3f} ({'within' if ok else 'over'} {budget:g})")
        if ok and chosen is None:
            chosen = margin
    if chosen is None:
        reason = (f"no margin's setting kept the budget on the check part: margin "
                  f"{FALLBACK_SCREEN_MARGIN}")
        chosen = FALLBACK_SCREEN_MARGIN
    else:
        reason = "the smallest margin whose setting kept the budget on the check part"
    log(f"screen margin auto: {chosen} ({reason})")
    return MarginChoice(chosen, reason, len(fit), tuple(check), tuple(candidates))


def _key(m: Any) -> str:
    return json.dumps([m.config.options, {str(i): o for i, o in m.config.layers.items()}],
                      sort_keys=True)


def candidate(margin: int, result: Any, on_check: Any, ok: bool) -> dict[str, Any]:
    best = result.best
    return {"margin": margin,
            "floors": {str(i): f.threshold for i, f in sorted((result.floors or {}).items())},
            "options": dict(sorted(best.config.options.items())),
            "layers": {str(i): o for i, o in sorted(best.config.layers.items())},
            "fit": {"reduction": best.reduction, "loss_points": best.loss},
            "check": {"reduction": on_check.reduction, "loss_points": on_check.loss},
            "accepted": ok}

