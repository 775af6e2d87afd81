"""The SPLS ring form's reference ring (cosprob: window x heads x L FP32 prob rows) that leaves
no room for one chunk row, not even in the block form (passes/spls_block_prediction.py, which
takes BERT-base at 2048 tokens with the default window 8): the error names the window that
fits (`passes/spls_chain_fit.py`, `ring_chunk_rows`), and that window compiles and
runs."""

from __future__ import annotations

import re
from pathlib import Path

import encoder_graphs
import pytest

from esact_cc import api
from esact_cc.runtime.errors import CompileError

SEQ, HEADS = 32, 4
MODEL = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)


def test_prediction_error_names_the_window_that_fits(tmp_path: Path) -> None:
    hw = tmp_path / "small.toml"  # MBUF below the SPA (ring form), VBUF below 8 ring slots
    hw.write_text('name = "small-ring"\n[sram]\nmask_buffer = 1024\nvector_buffer = 5000\n')
    with pytest.raises(CompileError, match=r"window 8; window <= (\d+) fits\)") as caught:
        api.compile(MODEL, stage="esact", sparsity="spls", sparsity_option=["window=8"],
                    hw=str(hw))
    window = int(re.search(r"window <= (\d+) fits", str(caught.value)).group(1))
    # The block form (passes/spls_block_prediction.py) holds more slots than half of VBUF,
    # the chunk form's budget (one slot per window row + a chunk row).
    assert window > 5000 // 4 // 2 // (HEADS * SEQ) - 1
    program = api.compile(MODEL, stage="esact", sparsity="spls",
                          sparsity_option=[f"window={window}"], hw=str(hw))
    sims = [i for i in program.program().instructions if i.opcode_name == "similarity"]
    assert sims and all(i.fields["has_ring"] for i in sims)
    result = program.simulate(encoder_graphs.encoder_inputs(seq=SEQ, padding=3), hw=str(hw))
    assert result.outputs["last_hidden_state"].shape == (1, SEQ, 64)
