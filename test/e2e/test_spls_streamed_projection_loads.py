"""The row-tiled SPLS projection (passes/spls_streamed_projection.py) fetches X ahead: each
row tile's X LOAD is hoisted in front of the previous tile's BPUs (X is read-only there), not
left behind the weight-code LOADs that wait for those BPUs in the in-order load queue; the
binary equals the whole projection's (default hardware, X on chip) bit for bit."""

from __future__ import annotations

import itertools
from pathlib import Path

import encoder_graphs
import numpy as np
from esact_cc.runtime.isa import Buffer

from esact_cc import api

SEQ, HIDDEN, HEADS = 256, 128, 16
SPLS = {"sparsity": "spls", "sparsity_option": ["threshold=0.5", "window=2"]}
SMALL_BUFFERS = ('name = "small-buffers"\n[sram]\nactivation_buffer = 36864\n'
                 'vector_buffer = 131072\n')
"""X and Q^ / K^ of all rows over ABUF: the projection runs over row tiles."""


def test_x_tiles_and_weight_codes_load_ahead_and_the_outputs_match_the_whole_form(
        tmp_path: Path) -> None:
    model = encoder_graphs.encoder(layers=2, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128,
                                   seed=3)
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
    hw = tmp_path / "small_buffers.toml"
    hw.write_text(SMALL_BUFFERS)
    streamed = api.compile(model, stage="esact", hw=str(hw), **SPLS)
    program = streamed.program().instructions
    # Second pass over X: one HLOG per row tile with its element's scale (scale_count),
    # followed by the projection's BPUs (phase 2's HLOGs of Q^ / K^ rows by BPU_SCORES).
    predict = [k for k, i in enumerate(program) if i.opcode_name in ("hlog", "bpu", "bpu_scores")]
    tile_hlogs = [k for k, n in itertools.pairwise(predict)
                  if program[k].opcode_name == "hlog" and program[k].fields["scale_count"] > 0
                  and program[n].opcode_name == "bpu"]
    assert len(tile_hlogs) >= 4  # 2 layers x at least 2 row tiles
    ahead = 0
    for h in tile_hlogs:
        src = program[h].fields["src_addr"]
        load = max(k for k in range(h) if program[k].opcode_name == "load"
                   and program[k].fields["buf"] == Buffer.VBUF
                   and program[k].fields["sram_addr"] == src)
        ahead += any(program[k].opcode_name == "bpu" for k in range(load, h))
    tiles_per_layer = len(tile_hlogs) // 2
    assert ahead == 2 * (tiles_per_layer - 1)  # every tile but each layer's first
    whole = api.compile(model, stage="esact", **SPLS)
    expected = whole.simulate(inputs)
    result = streamed.simulate(inputs, hw=str(hw))
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  expected.outputs["last_hidden_state"])
    assert result.report["spls"]["reused_rows"] == expected.report["spls"]["reused_rows"]
