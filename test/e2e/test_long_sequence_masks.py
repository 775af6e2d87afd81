"""Masked attention and SPLS prediction at sequences whose masks do not fit MBUF.

A small BERT-style encoder (hidden 64, 4 heads, 32 tokens, padding) on hardware whose MBUF is
shrunk (a test TOML) so that its H x L x L SPA / Sanger masks do not fit, as BERT-base's do not
on the default hardware at 128 tokens and beyond:
- SPLS takes the ring form (SIMILARITY reads the references of earlier chunks from a ring) and,
  with attention=topk, spills the SPA rows to DRAM; Sanger predicts per query tile and spills;
  SpAtten keeps only its keep vectors and expands rows with SPATTEN_MASK; the masked attention
  runs in query tiles that LOAD (or expand) their SPA rows;
- each binary equals the binary of the same model on the default hardware (where everything
  fits: the whole-row form, itself tested against the interpreter elsewhere) bit for bit, with
  the same reused rows (some, not all) and skipped MACs, and matches the INT8 reference
  interpreter as every encoder binary does (same integer datapath; LayerNorm / GELU in FP32
  round differently: test_compile_to_esb.py's bound).
"""

from __future__ import annotations

import encoder_graphs
from pathlib import Path

import numpy as np
import pytest
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

from esact_cc import api

ROOT = Path(__file__).resolve().parents[2]
SEQ, HIDDEN, HEADS = 32, 64, 4


GRAPHS = encoder_graphs
MODEL = GRAPHS.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128, seed=3)
INPUTS = GRAPHS.encoder_inputs(seq=SEQ, padding=3)

CASES = {
    # name: (scheme, options, MBUF bytes, where the attention's SPA rows come from per tile:
    # None = no SPA, "dram" = LOADed back after a spill, "expanded" = SPATTEN_MASK on chip)
    "spls-cosprob-dense-attention": ("spls", ["threshold=0.4", "window=3"], 1024, None),
    "spls-cosprob-topk-attention": ("spls", ["attention=topk", "threshold=0.4"], 1024, "dram"),
    "spls-overlap-topk-attention": ("spls", ["attention=topk", "similarity=overlap",
                                             "threshold=0.3", "window=3"], 2048, "dram"),
    "sanger": ("sanger", [], 1024, "dram"),
    "spatten": ("spatten", ["token_keep=0.8"], 1024, "expanded"),
}


def small_mbuf(tmp_path: Path, size: int) -> str:
    path = tmp_path / f"mbuf_{size}.toml"
    path.write_text(f'name = "small-mbuf-{size}"\n[sram]\nmask_buffer = {size}\n')
    return str(path)


def options(scheme: str, extra: list[str], hw: str | None) -> dict:
    return {"sparsity": scheme, "sparsity_option": extra, **({"hw": hw} if hw else {})}


@pytest.mark.parametrize("case", CASES)
def test_masks_larger_than_mbuf_run_bit_exact(case: str, tmp_path: Path) -> None:
    scheme, extra, size, source = CASES[case]
    hw = small_mbuf(tmp_path, size)
    assert HEADS * SEQ * SEQ > size  # the masks of one batch element do not fit
    program_model = api.compile(MODEL, stage="esact", **options(scheme, extra, hw))
    program = program_model.program()
    names = [i.opcode_name for i in program.instructions]
    mbuf_stores = [i for i in program.instructions
                   if i.opcode_name == "store" and i.fields["buf"] == Buffer.MBUF]
    assert bool(mbuf_stores) == (source == "dram")
    assert ("spatten_mask" in names) == (source == "expanded")
    if scheme == "spls":
        sims = [i for i in program.instructions if i.opcode_name == "similarity"]
        assert len(sims) > 1 and all(i.fields["has_ring"] for i in sims)
        rows = sum(i.fields["row_count"] for i in sims)
        assert rows == SEQ  # the chunks cover every row once
    if source is not None:  # the masked attention gets its SPA rows per query tile
        qk = [i for i in program.instructions if i.opcode_name == "attn_qk"]
        assert all(i.fields["has_mask"] for i in qk)
        assert min(i.fields["lq"] for i in qk) < SEQ
    result = program_model.simulate(INPUTS, hw=hw)
    got = result.outputs["last_hidden_state"]
    reference = api.compile(MODEL, stage="sparsity", **options(scheme, extra, None)).run(
        INPUTS)["last_hidden_state"]
    assert np.abs(got - reference).max() <= 1e-4 * np.abs(reference).max()
    whole = api.compile(MODEL, stage="esact", **options(scheme, extra, None))
    assert not any(i.fields["has_ring"] for i in whole.program().instructions
                   if i.opcode_name == "similarity")
    whole_result = whole.simulate(INPUTS)
    np.testing.assert_array_equal(got, whole_result.outputs["last_hidden_state"])
    assert result.report["spls"]["skipped_macs"] == whole_result.report["spls"]["skipped_macs"]
    if scheme == "spls":
        assert 0 < result.report["spls"]["reused_rows"] < SEQ


def test_explicit_chunk_rows_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    hw = small_mbuf(tmp_path, 1024)
    with pytest.raises(CompileError, match=r"spls-chunk-rows=32 does not fit .* \(at most \d+\)"):
        api.compile(MODEL, stage="esact", spls_chunk_rows=32, **options("spls", [], hw))


def test_projection_streamed_over_row_tiles_equals_the_whole_one(tmp_path: Path) -> None:
    """VBUF below one tensor of X (8 heads, so one head's attention output still fits a VBUF
    tile): the projection runs over row tiles, each per-tensor HLog scale the max of its
    tiles' scales (HLOG scale_count), and the binary equals the whole-row one bit for bit."""
    model = GRAPHS.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=8, ffn=128, seed=3)
    hw = tmp_path / "small_vbuf.toml"
    hw.write_text('name = "small-vbuf"\n[sram]\nvector_buffer = 8188\n')
    assert SEQ * HIDDEN * 4 > 8188  # X of one sequence does not fit VBUF
    for extra in (["threshold=0.4", "window=1"],
                  ["attention=topk", "similarity=overlap", "threshold=0.3"]):
        streamed = api.compile(model, stage="esact", **options("spls", extra, str(hw)))
        hlogs = [i for i in streamed.program().instructions if i.opcode_name == "hlog"]
        assert any(i.fields["scale_count"] > 1 for i in hlogs)
        result = streamed.simulate(INPUTS, hw=str(hw))
        whole = api.compile(model, stage="esact", **options("spls", extra, None))
        assert not any(i.fields["scale_count"] for i in whole.program().instructions
                       if i.opcode_name == "hlog")
        expected = whole.simulate(INPUTS)
        np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                      expected.outputs["last_hidden_state"])
        reused = result.report["spls"]["reused_rows"]
        assert 0 < reused == expected.report["spls"]["reused_rows"]


@pytest.mark.parametrize("scales", ["tensor", "token"])
def test_row_masked_linear_over_input_chunks_equals_the_whole_one(tmp_path: Path,
                                                                   scales: str) -> None:
    """ABUF (and WBUF, so that every other tile still fits) below one sequence of the FFN's
    512-wide input: the row-masked FFN2 GEMM accumulates over input chunks (GEMM accumulate,
    exact int32 sums) and the binary equals the default-hardware one bit for bit. Per token,
    whole rows are quantized into a DRAM copy first (a row's scale needs all its inputs)."""
    model = GRAPHS.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=512, seed=3)
    hw = tmp_path / "small_abuf.toml"
    hw.write_text('name = "small-abuf"\n[sram]\nactivation_buffer = 16384\n'
                  'weight_buffer = 16384\n')
    assert SEQ * 512 > 16384 * 3 // 4  # one sequence of FFN2's input exceeds its ABUF tile
    for extra in (["threshold=0.4", "window=3"],
                  ["attention=topk", "similarity=overlap", "threshold=0.3"]):
        chunked = api.compile(model, stage="esact", activation_scales=scales,
                              **options("spls", extra, str(hw)))
        gemms = [i for i in chunked.program().instructions if i.opcode_name == "gemm"]
        assert any(i.fields["accumulate"] and i.fields["has_row_mask"] for i in gemms)
        result = chunked.simulate(INPUTS, hw=str(hw))
        if scales == "token":  # the whole rows' INT8 copy went through DRAM
            assert any(i.opcode_name == "quant_rows" for i in chunked.program().instructions)
        expected = api.compile(model, stage="esact", activation_scales=scales,
                               **options("spls", extra, None)).simulate(INPUTS)
        np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                      expected.outputs["last_hidden_state"])
        assert 0 < result.report["spls"]["reused_rows"] == expected.report["spls"]["reused_rows"]
