"""A one-file HTML report of a run, for sharing: summary, tables, plots, nothing to fetch.

`html_report(report)` returns the document: the summary headline, every table of
runtime/summary_tables.py (energy at both boundaries, units, components, layers, SPLS), the
SPLS totals when the program predicts, and the plots of runtime/plots.py as base64 PNG
`data:` images. Styles are inline, there are no scripts and no links, so the file opens
offline and renders the same anywhere. Needs matplotlib for the plots (a UsageError
otherwise, like `--plots`).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .atomic_write import atomic_write_text
from .plots import render_plots
from .spls_summary import format_spls
from .summary_tables import SummaryTable, headline, summary_tables

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
pre { background: #f7f7f7; padding: 0.6em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""


def _table(table: SummaryTable) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                     for row in table.rows)
    return (f"<h2>{html.escape(table.title)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n"
            "</table>")


def html_report(report: dict[str, Any]) -> str:
    meta = report["meta"]
    title = f"ESACT run: {meta.get('binary', meta['config'])}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<pre>" + html.escape("\n".join(headline(report))) + "</pre>",
    ]
    parts += [_table(t) for t in summary_tables(report)]
    if "spls" in report:
        parts.append("<h2>SPLS</h2><pre>" + html.escape("\n".join(format_spls(report["spls"])).strip())
                     + "</pre>")
    parts.append("<h2>plots</h2>")
    for name, png in render_plots(report).items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(path: str | Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, html_report(report))
