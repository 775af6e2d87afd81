"""A chain without SIMILARITY in the ring form (spls-no-reuse, top-k attention: BERT-base at
512 tokens) runs the attention's Q linear beside the score path, not beside the projection
(passes/spls_beside_chain.py `beside_scores`): K and V alone then fit the projection's time,
and the MAC array has work while the BPU ranks the chunks. Each head's SPA rows take one of
as many MBUF slots as hold a chunk's rows (STOREs queued behind the Q linear's then do not
stall the ranking).

A small BERT-style encoder (hidden 64, 4 heads, 32 tokens, padding) with MBUF shrunk so the
SPA does not fit (as test_spls_no_reuse.py's ring case).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import encoder_graphs
import numpy as np
from esact_cc.runtime.isa import Buffer

from esact_cc import api

SEQ, HEADS, MBUF = 32, 4, 2048
MODEL = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
SPLS = {"sparsity": "spls", "sparsity_option": ["attention=topk", "threshold=1.01",
                                                 "k-ratio=0.25"]}


def _compiled(tmp_path: Path) -> tuple[api.CompiledModel, str]:
    hw = tmp_path / "mbuf.toml"
    hw.write_text(f'name = "small-mbuf-{MBUF}"\n[sram]\nmask_buffer = {MBUF}\n')
    return api.compile(MODEL, stage="esact", hw=str(hw), **SPLS), str(hw)


def test_q_gemms_run_beside_the_score_path_and_k_v_beside_the_projection(tmp_path: Path
                                                                          ) -> None:
    compiled, _ = _compiled(tmp_path)
    names = [i.opcode_name for i in compiled.program().instructions]
    last_scores = max(k for k, name in enumerate(names) if name == "bpu_scores")
    last_projection = max(k for k, name in enumerate(names) if name == "bpu")
    gemms = [k for k, name in enumerate(names) if name == "gemm"]
    # one GEMM each at 32 rows x 64 columns: K and V in front of the projection's BPU, Q after
    # it, in front of the last BPU_SCORES (before: Q beside the projection or after the chain)
    assert len([k for k in gemms if k < last_projection]) == 2
    assert len([k for k in gemms if last_projection < k < last_scores]) == 1


def test_spa_rows_take_every_mbuf_slot_that_fits(tmp_path: Path) -> None:
    compiled, _ = _compiled(tmp_path)
    program = compiled.program().instructions
    scores = [i for i in program if i.opcode_name == "bpu_scores"]
    rows = scores[0].fields["rows"]
    slots = {i.fields["spa_addr"] for i in scores}
    assert len(slots) == min(HEADS, MBUF // (rows * SEQ)) > 2  # was 2 (SPA_HEAD_SLOTS)
    stores = [i for i in program if i.opcode_name == "store" and i.fields["buf"] == Buffer.MBUF]
    assert sum(i.fields["rows"] for i in stores) == HEADS * SEQ  # each head's rows once


def test_binary_equals_the_interpreter(tmp_path: Path) -> None:
    compiled, hw = _compiled(tmp_path)
    expected = api.compile(MODEL, stage="sparsity", **SPLS).run(INPUTS)["last_hidden_state"]
    result = compiled.simulate(INPUTS, hw=hw)
    np.testing.assert_array_equal(result.outputs["last_hidden_state"], expected)


def test_linears_beside_the_chain_keep_two_input_tiles_in_flight(tmp_path: Path) -> None:
    """With ABUF for one 64-row input tile beside the projection's (a 44 KiB ABUF at 256
    tokens), K and V take 32-row tiles in two regions, so the next tile's input is prepared
    while this one's GEMMs run (was: 64-row tiles, each waiting for the last one's GEMMs)."""
    seq = 256
    model = encoder_graphs.encoder(layers=1, seq=seq, hidden=64, heads=HEADS, ffn=128, seed=3)
    hw = tmp_path / "abuf.toml"
    hw.write_text('name = "abuf-44k"\n[sram]\nmask_buffer = 4096\nactivation_buffer = 45056\n')
    program = api.compile(model, stage="esact", hw=str(hw), **SPLS).program()
    names = [i.opcode_name for i in program.instructions]
    first = names.index("bpu_scores")
    for linear in ("key", "value"):
        gemms = [program.instructions[k] for k in range(first) if names[k] == "gemm"
                 and f"/{linear}/" in program.debug[k].node]
        assert len(gemms) > 1 and all(g.fields["m"] <= seq // 2 for g in gemms)
        addresses = [g.fields["a_addr"] for g in gemms]
        assert len(set(addresses)) == 2 and all(a != b for a, b in pairwise(addresses))
