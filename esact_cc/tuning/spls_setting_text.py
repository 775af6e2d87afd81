"""How esact-tune's log and the benches write an SPLS setting and its measurement (one line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from esact_cc.tuning.spls_measurement import Measurement


def layer_text(overrides: Mapping[str, Any]) -> str:
    """`0.75` for a threshold alone, `off` for the prediction off, else `thr=0.75,w=4` style."""
    if set(overrides) == {"threshold"}:
        return str(overrides["threshold"])
    if overrides.get("prediction") == "off":
        return "off"
    short = {"threshold": "thr", "window": "w"}
    return ",".join(f"{short.get(k, k)}={v}" for k, v in sorted(overrides.items()))


def setting_text(m: Measurement) -> str:
    """The setting's options and per-layer overrides."""
    o = m.config.options
    text = (f"bits={o['hlog-bits']} k={o['k-ratio']} w={o['window']} thr={o['threshold']} "
            f"{o['similarity']} attn={o['attention']}")
    if o.get("first-reference"):
        text += f" first-ref={o['first-reference']}"
    if m.config.layers:
        text += " layers=" + "/".join(f"{i}:{layer_text(v)}"
                                      for i, v in sorted(m.config.layers.items()))
    return text


def describe_measurement(m: Measurement, budget: float, margin_se: float, estimate: str,
                         slack: float) -> str:
    """The setting, its reduction, accuracy, loss and the bound the search holds to `budget`."""
    bound = m.loss_bound(margin_se, estimate)
    mark = "ok" if bound <= budget + slack else "over"
    margin = "" if m.margin_loss is None else f", margins {m.margin_loss:+.3f}"
    return (f"  {setting_text(m)}: reduction {m.reduction:6.2%}  accuracy {m.accuracy:7.3f} "
            f"(loss {m.loss:+.3f} +- {m.loss_se:.3f}{margin}, bound {bound:+.3f}, {mark})")
