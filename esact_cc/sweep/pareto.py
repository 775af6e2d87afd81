"""Pareto fronts of a sweep: the points no other point beats on cycles, energy and accuracy
loss at once (all minimised), per model and timed input; plots of each pair of objectives.

Energy is the system boundary (DRAM included, report energy.system), since the sweep varies
DRAM bandwidth and technology; the table keeps the on-chip figure too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esact_cc.runtime.errors import UsageError

# column -> (file name part, axis label)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "total.cycles": ("cycles", "cycles"),
    "energy.system.energy_pj": ("energy", "energy, system (pJ)"),
    "accuracy_loss": ("accuracy", "accuracy loss (fraction)"),
}
FRONT_COLUMN = "pareto_front"
SCOPE = ("model", "input")  # fronts are compared within these


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Mask of the rows of `values` (points x objectives, minimised) no other row dominates
    (at least as good everywhere, better somewhere)."""
    keep = np.ones(len(values), dtype=bool)
    for i, row in enumerate(values):
        better_or_equal = (values <= row).all(axis=1)
        strictly = (values < row).any(axis=1)
        keep[i] = not (better_or_equal & strictly).any()
    return keep


def mark_fronts(rows: list[dict[str, Any]], objectives: Sequence[str] = tuple(OBJECTIVES)
                ) -> None:
    """Set `pareto_front` on every row: on the front of its model and input."""
    scopes: dict[tuple, list[int]] = {}
    for k, row in enumerate(rows):
        scopes.setdefault(tuple(row[c] for c in SCOPE), []).append(k)
    for members in scopes.values():
        values = np.array([[rows[k][c] for c in objectives] for k in members], dtype=float)
        for k, on_front in zip(members, non_dominated(values)):
            rows[k][FRONT_COLUMN] = bool(on_front)


def plot_fronts(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per model, input and pair of objectives: every point, the front highlighted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plots needs matplotlib, which is not installed "
                         "(pip install 'esact-cc[plot]')") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(OBJECTIVES)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    written = []
    scopes = sorted({tuple(row[c] for c in SCOPE) for row in rows}, key=str)
    for scope in scopes:
        members = [row for row in rows if tuple(row[c] for c in SCOPE) == scope]
        front = [row for row in members if row[FRONT_COLUMN]]
        for x, y in pairs:
            figure, axes = plt.subplots(figsize=(6, 4.5))
            axes.scatter([r[x] for r in members], [r[y] for r in members], s=10,
                         color="0.7", label=f"{len(members)} points")
            axes.scatter([r[x] for r in front], [r[y] for r in front], s=18, color="tab:red",
                         label=f"on the 3-objective Pareto front: {len(front)}")
            axes.set_xlabel(OBJECTIVES[x][1])
            axes.set_ylabel(OBJECTIVES[y][1])
            axes.set_title(f"{scope[0]}, input {scope[1]}")
            axes.legend(fontsize=8)
            figure.tight_layout()
            path = out_dir / (f"pareto_{scope[0]}_input{scope[1]}_{OBJECTIVES[x][0]}_"
                              f"{OBJECTIVES[y][0]}.png")
            figure.savefig(path, dpi=110)
            plt.close(figure)
            written.append(path)
    return written

