"""Plots of a run report (matplotlib is an optional extra: `pip install esact-cc[plot]`).

`write_plots(report, directory)` writes
  layer_cycles.png   per-layer unit-busy cycles stacked by component
  energy_breakdown.png   energy by category (MAC, BPU, top-k, SFU, each SRAM, DRAM, static)
and returns the paths written; without matplotlib it returns [] and writes nothing, so
callers can warn instead of failing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .atomic_write import atomic_write_bytes
from .report import COMPONENTS, NO_LAYER


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def layer_cycles_table(report: dict[str, Any]) -> tuple[list[str], dict[str, list[int]]]:
    """(layer keys, component -> cycles per layer) for the stacked bar chart."""
    layers = [key for key in report["layers"] if key != NO_LAYER]
    if NO_LAYER in report["layers"]:
        layers.append(NO_LAYER)
    names = list(COMPONENTS) + [c for c in report["components"] if c not in COMPONENTS]
    series = {}
    for comp in names:
        row = report["components"].get(comp)
        if not row or not row["instructions"]:
            continue
        series[comp] = [row["layers"].get(layer, {}).get("cycles", 0) for layer in layers]
    return layers, series


def write_plots(report: dict[str, Any], directory: str | Path) -> list[Path]:
    if not matplotlib_available():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    layers, series = layer_cycles_table(report)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(layers) + 4), 4))
    bottom = [0] * len(layers)
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours: one per component
    for k, (comp, values) in enumerate(series.items()):
        ax.bar(layers, values, bottom=bottom, label=comp, color=colors[k % len(colors)])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("layer")
    ax.set_ylabel("unit-busy cycles")
    ax.set_title(f"cycles per layer by component ({report['meta']['config']})")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    written.append(_save(fig, out / "layer_cycles.png"))
    plt.close(fig)

    breakdown = {k: v for k, v in report["energy_breakdown_pj"].items() if v > 0}
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(list(breakdown), [v * 1e-6 for v in breakdown.values()])
    ax.set_xlabel("energy (uJ)")
    ax.set_title(f"energy breakdown, total {report['total']['energy_pj'] * 1e-6:.3g} uJ")
    written.append(_save(fig, out / "energy_breakdown.png"))
    plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
    return path
