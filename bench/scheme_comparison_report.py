"""The table and plots of bench/scheme_comparison.py, from its per-model results (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheme_comparison_core import LAYER_COMPONENTS, PAPER_SPARSITY, SCHEMES

COLUMNS = ("scheme", "held-out loss (pts)", "QKV removed", "attention removed", "O removed",
           "FFN removed", "prediction (% dense on-chip)", "cycles (vs dense)",
           "on-chip uJ", "system uJ", "attention TOPS/W", "TOPS/W on-chip dense-eq / exec",
           "TOPS/W system dense-eq / exec", "binary vs INT8 interpreter")


def _removed(hw: dict[str, Any], group: str) -> str:
    dense = hw[f"{group}_macs_dense"]
    return f"{100 * (1 - hw[f'{group}_macs_executed'] / dense):.1f}%" if dense else "-"


def scheme_row(name: str, entry: dict[str, Any], dense_hw: dict[str, Any]) -> str:
    held = entry["reporting"]
    loss = f"{held['loss_points']:.2f}"
    hw = entry["hardware"]
    if "error" in hw:
        return "| " + " | ".join([name, loss, f"compile error: {hw['error']}"]
                                 + ["-"] * (len(COLUMNS) - 3)) + " |"
    base = dense_hw if "error" not in dense_hw else None
    cells = [name, loss, *(_removed(hw, g) for g in LAYER_COMPONENTS)]
    cells.append("-" if base is None else
                 f"{100 * hw['prediction_pj'] * 1e-6 / base['on_chip_uj']:.1f}%")
    cycles = f"{hw['cycles']:,.0f}"
    if base is not None:
        cycles += f" ({hw['cycles'] / base['cycles']:.2f}x)"
    cells += [cycles, f"{hw['on_chip_uj']:.1f}", f"{hw['system_uj']:.1f}",
              f"{hw['attention_tops_per_watt']:.2f}",
              f"{hw['on_chip_tops_per_watt']:.2f} / {hw['on_chip_tops_per_watt_executed']:.2f}",
              f"{hw['system_tops_per_watt']:.2f} / {hw['system_tops_per_watt_executed']:.2f}",
              "bit for bit" if hw["bit_exact"] else
              f"NO: max diff {hw['max_abs_diff']:.2g} ({hw['max_rel_diff']:.1g} of max)"]
    return "| " + " | ".join(cells) + " |"


def setting_text(entry: dict[str, Any]) -> str:
    point = entry.get("calibration")
    if point is None:
        return ""
    options = ", ".join(f"{k}={v}" for k, v in point["options"].items())
    layers = "; ".join(f"layer {i}: " + ", ".join(f"{k}={v}" for k, v in o.items())
                       for i, o in point["layers"].items())
    return options + (f"; {layers}" if layers else "")


def model_section(result: dict[str, Any]) -> str:
    schemes = result["schemes"]
    lines = [f"### {result['title']}", "",
             f"{result['calibration_inputs']} calibration inputs (tuning, INT8 ranges), "
             f"{result['reporting_inputs']} reporting inputs held apart (accuracy), the first "
             f"{result['hardware_inputs']} of them on the hardware model (`{result['hw']}`; "
             f"per-input means). Metric: {result['metric']}; dense INT8 "
             f"{result['dense_int8']['reporting']:.2f} on the reporting inputs; budget: "
             f"{result['budget']} ({result['budget_points']:.3f} points on calibration). "
             f"Run: `{result.get('command', '')}` ({result.get('choices', '')}), "
             f"{result.get('seconds', 0):.0f} s wall, {result.get('cpu_seconds', 0):.0f} s CPU.",
             "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    dense_hw = schemes["dense"]["hardware"]
    for name in SCHEMES:
        if name in schemes:
            lines.append(scheme_row(name, schemes[name], dense_hw))
    lines.append("")
    for name in SCHEMES:
        if name in schemes and name != "dense":
            entry = schemes[name]
            lines.append(f"- {name} tuned setting: {setting_text(entry)} (calibration loss "
                         f"{entry['calibration']['loss_points']:.2f}, scheme's own sparsity "
                         f"{100 * entry['reporting']['scheme_sparsity']:.1f}% held out)")
    for key, ratio in result["attention_ratios"].items():
        measured = "-" if ratio["measured"] is None else f"{ratio['measured']:.2f}x"
        lines.append(f"- attention-level energy efficiency {key.replace('_', ' ')}: "
                     f"{measured} (paper: {ratio['paper']:.2f}x)")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


HEADER = """# Sparsity schemes compared like for like (bench/scheme_comparison.py)

Every scheme runs through the same compiler (INT8, one IR), the same masked lowering and the
same hardware config; each is tuned by esact-tune's search on the calibration inputs to the
same budget and measured on reporting inputs held apart. Columns:
- held-out loss: dense INT8 score - the scheme's score on the reporting inputs (points: task
  accuracy, or cosine to the FP32 model x100);
- removed: MAC-array MACs not executed over the dense MACs of that component (hardware report;
  QKV = the Q, K, V projections, attention = QK^T and PV, O = output projection, FFN = both
  FFN linears);
- prediction: the scheme's prediction instructions' on-chip dynamic energy over the dense
  program's total on-chip energy;
- energy: `energy.on_chip` (the die) and `energy.system` (plus DRAM and host), per input;
- attention TOPS/W: 2 x the attention's dense MACs over the on-chip dynamic energy of the
  attention (QK^T, PV, their softmax) plus the scheme's prediction (SPLS's prediction serves
  its row reuse in the QKV, O and FFN too, and is charged here in full);
- TOPS/W end to end: dense-equivalent operations (2 x dense MACs) and executed ones, per
  joule at each boundary;
- binary vs INT8 interpreter: whether the binary's outputs equal the reference interpreter's
  on the sparsity-stage IR bit for bit on every hardware input, else the largest difference
  (absolute, and relative to the largest output).
Each model's section gives the command and choices of its run.

The whole table and one trade-off plot per model (`scheme_comparison_<model>.png`) come from
one command in a fresh clone (`pip install -e '.[test,models]'`; about 12 CPU minutes, 47 min
wall on a machine shared at load 12): `python bench/scheme_comparison.py`
(`--models` for a subset; `--markdown` rebuilds this file and the plots from the JSONs). Each
section's Run line is the command its numbers came from (MiniLM and ViT-base here with
`--search quick --uniform-only`: flags the default run does not pass).
Masked attention is charged per kept position: the masked ATTN_QK's scores, the SFU steps
between it and ATTN_PV and P's read (docs/hardware.md "Sparse attention unit").
"""


def reached_sparsity(scheme: str, hw: dict[str, Any]) -> float | None:
    """The fraction of the MAC work a scheme removed, counted as its paper counts it: SPLS
    over all layers' computation (prediction excluded), Sanger and SpAtten over the attention."""
    if "error" in hw:
        return None
    groups = tuple(LAYER_COMPONENTS) if scheme == "spls" else ("attention",)
    dense = sum(hw[f"{g}_macs_dense"] for g in groups)
    executed = sum(hw[f"{g}_macs_executed"] for g in groups)
    return 1.0 - executed / dense if dense else None


def paper_sparsity_section(results: list[dict[str, Any]]) -> str:
    """Per baseline: the sparsity its paper reports and what each model reaches here under the
    table's budget (the tuned setting's binary)."""
    lines = ["## Sparsity reached against each paper's", ""]
    for scheme, (counted, paper) in PAPER_SPARSITY.items():
        reached = []
        for result in results:
            entry = result["schemes"].get(scheme)
            value = None if entry is None else reached_sparsity(scheme, entry["hardware"])
            if value is not None:
                reached.append(f"{result['model']} {100 * value:.1f}% "
                               f"({1 / max(1e-9, 1 - value):.2f}x, loss "
                               f"{entry['reporting']['loss_points']:.2f})")
        lines.append(f"- {scheme} ({counted} removed): paper {paper}; here "
                     f"{'; '.join(reached) or 'no run'}.")
    return "\n".join(lines) + "\n"


def markdown(results: list[dict[str, Any]]) -> str:
    return (HEADER + "\n" + paper_sparsity_section(results) + "\n"
            + "\n".join(model_section(r) for r in results))


def plot(result: dict[str, Any], path: Path) -> bool:
    """Computation removed against held-out accuracy loss, one curve per scheme."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(s for s in SCHEMES if s != "dense"):
        entry = result["schemes"].get(name)
        if entry is None:
            continue
        points = sorted((p for p in entry.get("curve", []) if p["mac_removed"] is not None),
                        key=lambda p: p["mac_removed"])
        color = f"C{i}"
        if points:
            ax.plot([100 * p["mac_removed"] for p in points], [p["loss_points"] for p in points],
                    "o-", color=color, ms=4, label=f"{name} (uniform settings)")
        tuned = entry["reporting"]
        if tuned["mac_removed"] is not None:
            ax.plot(100 * tuned["mac_removed"], tuned["loss_points"], "*", color=color, ms=14,
                    markeredgecolor="k", label=f"{name} tuned (esact-tune)")
    labelled = result["metric"].startswith("task")
    ax.axhline(result["budget_points"] if labelled else 0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("MAC-array work removed, prediction excluded (% of the layers' dense MACs)")
    ax.set_ylabel("held-out loss vs dense INT8 (points)")
    top = max([1.0] + [p["loss_points"] for e in result["schemes"].values()
                       for p in e.get("curve", [])])
    ax.set_ylim(-0.5, min(top + 0.5, 20))
    ax.set_title(f"{result['title']}: {result['metric']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
