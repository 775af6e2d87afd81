"""Row-reuse attention whose one head's [L, dv] output exceeds a VBUF quarter (BERT-base at 2048
tokens on the default hardware: 2048 x 64 FP32 is half of VBUF).

The masked attention runs in query tiles and keeps each head's whole output in VBUF until its
last tile (a reused row's representative may lie in an earlier tile), so that output takes half
of VBUF and the query tile shrinks (`passes/lower_attention.py`, `_attention_tiling`). A small
SPLS encoder on a shrunken-VBUF TOML must equal the default-hardware binary (one tile, the
whole-row form) bit for bit, with the same reused rows.
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np

from esact_cc import api

SEQ, HIDDEN, HEADS = 32, 64, 2
VBUF_BYTES = 16000
MODEL = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128, seed=3)
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
OPTIONS = {"sparsity": "spls", "sparsity_option": ["threshold=0.4", "window=1"]}


def test_head_output_in_half_of_vbuf_equals_the_whole_row_binary(tmp_path: Path) -> None:
    hw = tmp_path / "small_vbuf.toml"
    hw.write_text(f'name = "small-vbuf"\n[sram]\nvector_buffer = {VBUF_BYTES}\n')
    head_words = SEQ * HIDDEN // HEADS
    assert VBUF_BYTES // 4 // 4 < head_words <= VBUF_BYTES // 4 // 2  # > a quarter, <= half
    tiled = api.compile(MODEL, stage="esact", hw=str(hw), **OPTIONS)
    qk = [i for i in tiled.program().instructions if i.opcode_name == "attn_qk"]
    assert all(i.fields["has_row_mask"] for i in qk)
    assert max(i.fields["lq"] for i in qk) < SEQ  # query tiles, not one whole-row tile
    result = tiled.simulate(INPUTS, hw=str(hw))
    whole = api.compile(MODEL, stage="esact", **OPTIONS)
    assert {i.fields["lq"] for i in whole.program().instructions
            if i.opcode_name == "attn_qk"} == {SEQ}
    expected = whole.simulate(INPUTS)
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  expected.outputs["last_hidden_state"])
    assert 0 < result.report["spls"]["reused_rows"] == expected.report["spls"]["reused_rows"]
