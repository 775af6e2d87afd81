"""esact-run's report outputs as whole processes: `--html-report` writes one self-contained
file; `--plots` and `--html-report` without matplotlib are one error line before the run,
with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime.assembly import assemble
from esact_cc.runtime.esb import write_esb
from esact_cc.runtime.hw_config import load_config
from hostile_run import assert_user_error, run_tool, tree_state

ROOT = Path(__file__).resolve().parents[2]
ASM = ROOT / "test" / "fixtures" / "asm" / "linear_requant_softmax.s"
SHAPES = {"x": ((8, 32), np.int8), "w": ((32, 48), np.int8), "bias": ((48,), np.int32),
          "mult": ((48,), np.float32), "dq": ((48,), np.float32)}


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    write_esb(assemble(ASM.read_text(), load_config().hash), tmp_path / "prog.esb")
    args = ["prog.esb"]
    for name, (shape, dtype) in SHAPES.items():
        np.save(tmp_path / f"{name}.npy", np.ones(shape, dtype))
        args += ["--input", f"{name}={name}.npy"]
    return args


def test_html_report_is_one_self_contained_file(tmp_path: Path, run_args: list[str]):
    pytest.importorskip("matplotlib")
    result = run_tool("esact-run", *run_args, "--html-report", "r.html", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


@pytest.mark.parametrize("option,value", [("--plots", "plots"), ("--html-report", "r.html")])
def test_without_matplotlib_refused_before_the_run(tmp_path: Path, run_args: list[str],
                                                   monkeypatch, option: str, value: str):
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib blocked by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))
    before = tree_state(tmp_path)
    result = run_tool("esact-run", *run_args, option, value, "--report", "r.json", cwd=tmp_path)
    assert_user_error(result, f"{option} needs matplotlib", "pip install")
    assert tree_state(tmp_path) == before  # no report: refused before running
