"""Hand-assembled programs using the modern-block SFU instructions (runtime/isa_modern_blocks.py),
run by esact-as and esact-run as whole processes: ROPE fields that contradict each other are
one error line naming the instruction and field, never a traceback or a wrong result; the
same program with consistent fields computes rope_rows exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime.isa_modern_blocks import rope_rows
from hostile_run import assert_user_error, run_tool, tree_state

ROWS, COLS, ROTARY = 4, 8, 4

PROGRAM = """\
.io kind=input name="x" dtype=float32 shape=[{rows},{cols}] address=0
.io kind=input name="cos" dtype=float32 shape=[{rows},{rot}] address=256
.io kind=input name="sin" dtype=float32 shape=[{rows},{rot}] address=512
.io kind=output name="y" dtype=float32 shape=[{rows},{cols}] address=1024
.text
load buf=VBUF sram_addr=0 dram_addr=0 rows={rows} cols={cols}
load buf=VBUF sram_addr=64 dram_addr=256 rows={rows} cols={rot}
load buf=VBUF sram_addr=128 dram_addr=512 rows={rows} cols={rot}
rope dst_addr=0 src_addr=0 rows={rows} cols={cols} cos_addr=64 sin_addr=128 head_dim={head_dim} rotary_dim={rotary_dim}
store buf=VBUF sram_addr=0 dram_addr=1024 rows={rows} cols={cols}
halt
"""


def _assemble(tmp_path: Path, head_dim: int, rotary_dim: int) -> tuple[Path, dict[str, Path]]:
    source = tmp_path / "rope.s"
    source.write_text(PROGRAM.format(rows=ROWS, cols=COLS, rot=ROTARY, head_dim=head_dim,
                                     rotary_dim=rotary_dim))
    binary = tmp_path / "rope.esb"
    result = run_tool("esact-as", source, "-o", binary, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((ROWS, COLS)), "cos": rng.uniform(-1, 1, (ROWS, ROTARY)),
              "sin": rng.uniform(-1, 1, (ROWS, ROTARY))}
    paths = {}
    for name, array in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array.astype(np.float32))
    return binary, paths


def _inputs(paths: dict[str, Path]) -> list[str]:
    return [arg for name, path in paths.items() for arg in ("--input", f"{name}={path}")]


@pytest.mark.parametrize("head_dim,rotary_dim,field", [
    (4, 6, "rotary_dim"),  # more rotated channels than a head has
    (4, 3, "rotary_dim"),  # odd: rotate_half has no middle
    (3, 2, "head_dim"),  # head_dim does not divide cols
])
def test_inconsistent_rope_fields_are_one_line(tmp_path: Path, head_dim: int, rotary_dim: int,
                                               field: str) -> None:
    binary, paths = _assemble(tmp_path, head_dim, rotary_dim)
    before = tree_state(tmp_path)
    result = run_tool("esact-run", binary, *_inputs(paths), "--output-dir", tmp_path / "out",
                      cwd=tmp_path)
    assert_user_error(result, "instruction 3 (rope)", f"field '{field}'")
    assert tree_state(tmp_path) == before


def test_consistent_rope_program_computes_rope_rows(tmp_path: Path) -> None:
    binary, paths = _assemble(tmp_path, head_dim=4, rotary_dim=ROTARY)
    result = run_tool("esact-run", binary, *_inputs(paths), "--output-dir", tmp_path / "out",
                      "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    x, cos, sin = (np.load(paths[n]) for n in ("x", "cos", "sin"))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), rope_rows(x, cos, sin, 4, ROTARY))
