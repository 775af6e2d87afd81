"""The SPLS prediction's block form (passes/spls_block_prediction.py) where the cosprob
reference ring exceeds half of VBUF (BERT-base at 2048 tokens with the default window 8).

A small SPLS encoder on a shrunken-VBUF TOML: window 8's ring (8 x H x L FP32) takes more
than half of VBUF, so the chunk form cannot hold it; the block form predicts blocks of rows
head by head, spills their SPA / prob rows to DRAM and decides one-row chunks from them
LOADed back. Its binary must equal the default-hardware binary (chunk form, ring in half of
VBUF) and the INT8 interpreter bit for bit, with the same reused rows, for the padding-row
mask and for a per-query mask shared by the heads (BERT's expanded [B, 1, L, L]). A VBUF
too small even for that is one error line naming the window that fits.
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import pytest

from esact_cc import api
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

SEQ, HIDDEN, HEADS, WINDOW = 256, 64, 4, 8
OPTIONS = {"sparsity": "spls", "sparsity_option": ["threshold=0.5", f"window={WINDOW}"]}
VBUF_BYTES = 64000
"""Holds the window-8 ring (8 x 4 x 256 FP32 = 32 KiB) and the block form, not the ring and
one chunk row in half of VBUF."""


def _hw(tmp_path: Path, vbuf_bytes: int) -> str:
    hw = tmp_path / "small_vbuf.toml"
    hw.write_text(f'name = "small-vbuf"\n[sram]\nvector_buffer = {vbuf_bytes}\n')
    return str(hw)


@pytest.mark.parametrize("expanded_mask", [False, True])
def test_block_form_with_the_ring_over_half_of_vbuf_is_bit_exact(
        expanded_mask: bool, tmp_path: Path) -> None:
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128,
                                   seed=3, expanded_mask=expanded_mask)
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
    row_bytes = HEADS * SEQ * 4
    assert (WINDOW + 1) * row_bytes > VBUF_BYTES // 2  # ring + one row: over half of VBUF
    hw = _hw(tmp_path, VBUF_BYTES)
    blocked = api.compile(model, stage="esact", hw=hw, **OPTIONS)
    program = blocked.program().instructions
    sims = [i for i in program if i.opcode_name == "similarity"]
    assert len(sims) == SEQ and all(i.fields["has_ring"] and i.fields["row_count"] == 1
                                    for i in sims)
    # Every head's SPA and prob rows of every block go to DRAM once and come back per chunk.
    blocks = sum(1 for i in program if i.opcode_name == "bpu_scores") // HEADS
    assert 1 < blocks < SEQ
    spa_stores = [i for i in program if i.opcode_name == "store"
                  and i.fields["buf"] == Buffer.MBUF]
    assert len(spa_stores) == blocks * HEADS
    assert sum(i.fields["rows"] for i in spa_stores) == HEADS * SEQ
    spa_loads = [i for i in program if i.opcode_name == "load" and i.fields["buf"] == Buffer.MBUF]
    assert len(spa_loads) == SEQ and {i.fields["rows"] for i in spa_loads} == {HEADS}
    result = blocked.simulate(inputs, hw=hw)

    whole = api.compile(model, stage="esact", **OPTIONS)
    assert all(i.fields["row_count"] > 1 for i in whole.program().instructions
               if i.opcode_name == "similarity")  # the chunk form
    expected = whole.simulate(inputs)
    got = result.outputs["last_hidden_state"]
    np.testing.assert_array_equal(got, expected.outputs["last_hidden_state"])
    interpreted = api.compile(model, stage="sparsity", **OPTIONS).run(inputs)
    np.testing.assert_array_equal(got, interpreted["last_hidden_state"])
    assert 0 < result.report["spls"]["reused_rows"] == expected.report["spls"]["reused_rows"]


def test_ring_that_does_not_fit_even_the_block_form_is_one_error_line(tmp_path: Path) -> None:
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128,
                                   seed=3)
    with pytest.raises(CompileError) as raised:
        api.compile(model, stage="esact", hw=_hw(tmp_path, 36000), **OPTIONS)
    message = str(raised.value)
    assert "\n" not in message
    assert f"the SPLS prediction of {SEQ} rows x {HEADS} heads does not fit on chip" in message
    assert f"window {WINDOW}; window <= " in message
    fits = int(message.rsplit("window <= ", 1)[1].split()[0])
    assert 1 <= fits < WINDOW
    smaller = {**OPTIONS, "sparsity_option": ["threshold=0.5", f"window={fits}"]}
    api.compile(model, stage="esact", hw=_hw(tmp_path, 36000), **smaller)  # the hint holds
