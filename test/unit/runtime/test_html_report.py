"""The one-file HTML report: self-contained (no scripts, no links, images inline), the same
tables as the text summary, both energy boundaries, both plots as PNG."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime.assembly import assemble
from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.report import format_summary
from esact_cc.runtime.run_program import run_program
from esact_cc.runtime.summary_tables import summary_tables

CONFIG = load_config()
FIXTURE = Path(__file__).parents[2] / "fixtures" / "asm" / "linear_requant_softmax.s"


@pytest.fixture(scope="module")
def report() -> dict:
    program = assemble(FIXTURE.read_text(), CONFIG.hash)
    rng = np.random.default_rng(1)
    feed = {"x": rng.integers(-128, 128, (8, 32)).astype(np.int8),
            "w": rng.integers(-128, 128, (32, 48)).astype(np.int8),
            "bias": rng.integers(-99, 99, 48).astype(np.int32),
            "mult": np.full(48, 1e-3, np.float32), "dq": np.full(48, 1e-4, np.float32)}
    return run_program(program, feed, CONFIG, meta={"binary": "fixture.esb"}).report


def test_html_is_self_contained_with_every_table_and_both_plots(report, tmp_path):
    pytest.importorskip("matplotlib")
    from esact_cc.runtime.html_report import html_report, write_html_report

    page = html_report(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing to fetch
    for table in summary_tables(report):
        assert f"<h2>{table.title}</h2>" in page
        assert page.count("<tr>") >= len(table.rows)
    assert "<td>on-chip</td>" in page and "<td>system</td>" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    write_html_report(tmp_path / "r.html", report)
    assert (tmp_path / "r.html").read_text() == page  # deterministic


def test_html_and_text_summary_show_the_same_cells(report):
    text = format_summary(report)
    for table in summary_tables(report):
        for row in table.rows:
            assert all(cell in text for cell in row)


def test_html_without_matplotlib_is_one_clear_error(report, monkeypatch):
    from esact_cc.runtime.html_report import html_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match="needs matplotlib"):
        html_report(report)
