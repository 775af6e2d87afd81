"""Plots of a run report (matplotlib is an optional extra: `pip install esact-cc[plot]`).

`render_plots(report)` draws, as PNG bytes by file name,
  layer_cycles.png       per-layer unit-busy cycles stacked by component
  energy_breakdown.png   energy by category, on-chip (MAC, BPU, top-k, SFU, each SRAM,
                         leakage) and off-chip (DRAM, host), with both boundaries' totals
`write_plots(report, directory)` writes them and returns the paths; runtime/html_report.py
embeds them. Without matplotlib both raise a UsageError naming the option that asked for
plots (`require_matplotlib`), so a tool can refuse before it runs anything.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .atomic_write import atomic_write_bytes
from .energy import ON_CHIP_CATEGORIES
from .errors import UsageError
from .report import COMPONENTS, NO_LAYER

PLOT_DPI = 110


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def require_matplotlib(option: str) -> None:
    """One error line when `option` asks for plots and matplotlib is missing."""
    if not matplotlib_available():
        raise UsageError(f"{option} needs matplotlib, which is not installed "
                         "(pip install 'esact-cc[plot]')")


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


def energy_bars(report: dict[str, Any]) -> list[tuple[str, float, bool]]:
    """(category, pJ, on chip?) of every non-zero energy category, leakage (`static`) with
    the on-chip ones."""
    on_chip = {*ON_CHIP_CATEGORIES, "static"}
    return [(name, pj, name in on_chip)
            for name, pj in report["energy"]["breakdown_pj"].items() if pj > 0]


def render_plots(report: dict[str, Any]) -> dict[str, bytes]:
    require_matplotlib("plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = {}
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
    pngs["layer_cycles.png"] = _png(fig, plt)

    bars = energy_bars(report)
    energy = report["energy"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh([name for name, _, _ in bars], [pj * 1e-6 for _, pj, _ in bars],
            color=["tab:blue" if inside else "tab:red" for _, _, inside in bars])
    ax.invert_yaxis()
    ax.set_xlabel("energy (uJ); blue: on-chip, red: off-chip")
    ax.set_title(f"energy: on-chip {energy['on_chip']['energy_pj'] * 1e-6:.3g} uJ, system "
                 f"{energy['system']['energy_pj'] * 1e-6:.3g} uJ (DRAM {energy['dram_technology']})")
    pngs["energy_breakdown.png"] = _png(fig, plt)
    return pngs


def write_plots(report: dict[str, Any], directory: str | Path) -> list[Path]:
    pngs = render_plots(report)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
        written.append(out / name)
    return written


def _png(fig: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    # no timestamp or software tag in the file: the same report gives the same bytes
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
