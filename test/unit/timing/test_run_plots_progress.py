"""Plots (optional matplotlib) and the esact-run progress bar."""

import io
import sys

import pytest
from esact_cc.runtime import plots
from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.cli.esact_run_main import ProgressBar

REPORT = {
    "meta": {"config": "esact-default"},
    "energy": {"dram_technology": "ddr3", "on_chip": {"energy_pj": 1e6},
               "system": {"energy_pj": 3e6},
               "breakdown_pj": {"mac": 1e6, "dram": 2e6, "static": 0.0}},
    "layers": {"0": {}, "1": {}, "none": {}},
    "components": {
        "q": {"instructions": 2, "layers": {"0": {"cycles": 100}, "1": {"cycles": 50}}},
        "ffn1": {"instructions": 1, "layers": {"1": {"cycles": 400}}},
        "load": {"instructions": 1, "layers": {"none": {"cycles": 70}}},
        "k": {"instructions": 0, "layers": {}},
    },
}


def test_layer_cycles_table_stacks_components_per_layer():
    layers, series = plots.layer_cycles_table(REPORT)
    assert layers == ["0", "1", "none"]
    assert series == {"q": [100, 50, 0], "ffn1": [0, 400, 0], "load": [0, 0, 70]}


def test_plots_without_matplotlib_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    with pytest.raises(UsageError, match=r"^--plots needs matplotlib, which is not installed"):
        plots.require_matplotlib("--plots")
    with pytest.raises(UsageError, match="needs matplotlib"):
        plots.write_plots(REPORT, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_energy_bars_mark_the_boundary():
    assert plots.energy_bars(REPORT) == [("mac", 1e6, True), ("dram", 2e6, False)]


def test_plots_are_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    written = plots.write_plots(REPORT, tmp_path)
    assert sorted(p.name for p in written) == ["energy_breakdown.png", "layer_cycles.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeStream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_is_silent_on_short_non_tty_runs():
    stream = FakeStream(tty=False)
    bar = ProgressBar(stream, quiet_seconds=60)
    for i in range(1, 101):
        bar(i, 100)
    bar.finish()
    assert stream.getvalue() == ""


def test_progress_reports_long_non_tty_runs_in_lines():
    stream = FakeStream(tty=False)
    bar = ProgressBar(stream, quiet_seconds=0)
    bar(100, 100)
    assert stream.getvalue() == "esact-run: 100/100 instructions (0s)\n"


def test_progress_draws_a_bar_on_a_tty():
    stream = FakeStream(tty=True)
    bar = ProgressBar(stream)
    bar(10, 10)
    bar.finish()
    text = stream.getvalue()
    assert "10/10" in text and "instructions" in text and "\n" in text  # the bar ended its line
