"""The readable summary of a run report: its headline and tables, once, for every renderer.

`summary_tables(report)` says what the summary shows (title, columns, rows of text cells);
`render_text` draws them with rich for esact-run's stdout, and runtime/html_report.py draws
the same tables as HTML, so the terminal and the shared report never disagree.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

NO_LAYER = "none"  # layer key of instructions outside any Transformer layer (report.py)
TEXT_WIDTH = 132  # columns of the text summary: wide enough that no table wraps a cell


@dataclass(frozen=True)
class SummaryTable:
    title: str
    columns: tuple[str, ...]  # the first column is a name (left-aligned), the rest numbers
    rows: tuple[tuple[str, ...], ...]


_SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"),
                (1e-6, "u"), (1e-9, "n"), (1e-12, "p"))


def si(value: float, unit: str) -> str:
    """`value` with an SI prefix and 3 significant digits: 3.1e-5 J -> '31 uJ'."""
    for factor, prefix in _SI_PREFIXES:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def joules(pj: float) -> str:
    return si(pj * 1e-12, "J")


def headline(report: dict[str, Any]) -> list[str]:
    """The lines above the tables: config, time, work."""
    t, meta = report["total"], report["meta"]
    return [
        f"config {meta['config']}  ({meta['frequency_hz'] / 1e9:g} GHz, "
        f"{meta['instructions']} instructions)",
        f"cycles  {t['cycles']:,}   {t['seconds'] * 1e3:.4f} ms   roofline "
        f"{report['roofline_cycles']:,} ({report['roofline']['bound_by']})",
        f"MACs    {t['macs_executed']:,} of {t['macs_dense']:,} dense "
        f"({t['mac_reduction'] * 100:.1f}% skipped)   {t['effective_tops']:.3f} effective TOPS",
    ]


def energy_table(report: dict[str, Any]) -> SummaryTable:
    e = report["energy"]
    rows = []
    for name, label in (("on_chip", "on-chip"), ("system", "system")):
        b = e[name]
        rows.append((label, joules(b["energy_pj"]), joules(b["dynamic_pj"]),
                     joules(b["static_pj"]), joules(b.get("off_chip_pj", 0.0)),
                     si(b["average_power_w"], "W"), f"{b['tops_per_watt']:.3f}",
                     f"{b['tops_per_watt_executed']:.3f}"))
    return SummaryTable(
        f"energy (DRAM {e['dram_technology']}, {e['dram_pj_per_byte']:g} pJ/B)",
        ("boundary", "energy", "dynamic", "leakage", "DRAM+host", "power", "TOPS/W dense-eq",
         "TOPS/W executed"),
        tuple(rows))


def units_table(report: dict[str, Any]) -> SummaryTable:
    rows = []
    for name, unit in report["units"].items():
        stalls = unit["stalls"]
        rows.append((name, str(unit["instructions"]), f"{unit['busy_cycles']:,}",
                     f"{unit['utilisation'] * 100:.1f}%", f"{unit['stall_cycles']:,}",
                     max(stalls, key=stalls.get) if stalls else "-"))
    return SummaryTable("units", ("unit", "instrs", "busy", "util", "stalled", "top stall"),
                        tuple(rows))


_WORK_COLUMNS = ("instrs", "MACs dense", "executed", "cycles", "energy on-chip",
                 "energy system", "rows kept")


def _work_row(name: str, row: dict[str, Any]) -> tuple[str, ...]:
    return (name, str(row["instructions"]), f"{row['macs_dense']:,}",
            f"{row['macs_executed']:,}", f"{row['cycles']:,}", joules(row["energy_on_chip_pj"]),
            joules(row["energy_system_pj"]), f"{row['mask']['rows_kept_fraction'] * 100:.1f}%")


def components_table(report: dict[str, Any]) -> SummaryTable:
    return SummaryTable("components (dynamic energy)", ("component", *_WORK_COLUMNS),
                        tuple(_work_row(n, r) for n, r in report["components"].items()
                              if r["instructions"]))


def layers_table(report: dict[str, Any]) -> SummaryTable:
    return SummaryTable("layers (dynamic energy)", ("layer", *_WORK_COLUMNS),
                        tuple(_work_row(k, r) for k, r in report["layers"].items()
                              if k != NO_LAYER))


def spls_layers_table(spls: dict[str, Any]) -> SummaryTable:
    return SummaryTable("SPLS per layer", ("layer", "reused rows", "SPA kept", "reduction"),
                        tuple((key, f"{row['reused_row_fraction'] * 100:.1f}%",
                               f"{row['spa_kept_fraction'] * 100:.1f}%",
                               f"{row['computation_reduction'] * 100:.1f}%")
                              for key, row in spls["layers"].items()))


def summary_tables(report: dict[str, Any]) -> list[SummaryTable]:
    """Every table of the summary, in display order (empty ones left out)."""
    tables = [energy_table(report), units_table(report), components_table(report),
              layers_table(report)]
    if "spls" in report:
        tables.append(spls_layers_table(report["spls"]))
    return [t for t in tables if t.rows]


def render_text(report: dict[str, Any]) -> str:
    """The summary as plain text (rich tables, no colour: deterministic, pipe-friendly)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from .spls_summary import format_spls

    buffer = io.StringIO()
    console = Console(file=buffer, width=TEXT_WIDTH, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, markup=False)
    for line in headline(report):
        console.print(line)
    for table in summary_tables(report):
        # ASCII rules: the summary prints on any terminal encoding and pastes into plain text
        grid = Table(title=table.title, title_justify="left", box=box.ASCII2, show_edge=False,
                     pad_edge=False)
        for k, column in enumerate(table.columns):
            grid.add_column(column, justify="left" if k == 0 else "right", no_wrap=True)
        for row in table.rows:
            grid.add_row(*row)
        console.print()
        console.print(grid)
    if "spls" in report:
        for line in format_spls(report["spls"]):
            console.print(line)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
