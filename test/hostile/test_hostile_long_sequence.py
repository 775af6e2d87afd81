"""Hardware too small for even the streamed masks (one SPA / mask row of every head): esact-cc
with each attention-sparsity scheme ends with one `esact-cc: error:` line naming the op and
what does not fit, exit 1, no traceback, no binary written. An explicit `spls-chunk-rows`
larger than the chunk that fits is refused the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "test" / "fixtures" / "models" / "bert_tiny_legacy17.onnx"  # 16 tokens, 4 heads
SOFTMAX = '"/model/encoder/layer.0/attention/self/Softmax"'

NEEDLES = {
    "spls": ["spls.predict_attention at " + SOFTMAX, "16 rows x 4 heads",
             "does not fit on chip even one row at a time", "MBUF 8 bytes"],
    "sanger": ["sanger.predict_mask at " + SOFTMAX, "one Sanger mask row of 16 keys"],
    "spatten": ["spatten.select at " + SOFTMAX, "keep vectors", "do not fit MBUF (8 bytes)"],
}


def tiny_mbuf(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(f"[sram]\nmask_buffer = {size}\n")
    return path


@pytest.mark.parametrize("scheme", NEEDLES)
def test_masks_that_do_not_fit_even_streamed_are_one_error(tmp_path: Path, scheme: str):
    hw = tiny_mbuf(tmp_path, 8)
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "-o", "out.esb", "--hw", hw, "--sparsity", scheme,
                      "--no-cache", cwd=tmp_path)
    assert_user_error(result, *NEEDLES[scheme])
    assert tree_state(tmp_path) == before


def test_explicit_chunk_rows_over_what_fits_is_one_error(tmp_path: Path):
    ir = tmp_path / "sparse.mlir"
    compiled = run_tool("esact-cc", MODEL, "-o", ir, "--sparsity", "spls", "--compile-to",
                        "sparsity", "--no-cache", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    hw = tiny_mbuf(tmp_path, 320)  # SPA 4 x 16 x 16 = 1024 bytes: the ring form, a few rows
    before = tree_state(tmp_path)
    result = run_tool("esact-opt", ir, "-p", f'lower-to-esact{{hw="{hw}" spls-chunk-rows=16}}',
                      cwd=tmp_path)
    assert_user_error(result, "spls-chunk-rows=16 does not fit", "16 rows x 4 heads",
                      "(at most")
    assert tree_state(tmp_path) == before
