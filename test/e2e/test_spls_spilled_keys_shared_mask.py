"""SPLS ring form with a per-query mask block shared by all heads ([1, 1, L, L], as BERT's
export writes its padding mask) AND the K^ codes spilled to DRAM (passes/spls_key_codes.py),
as BERT-base takes both at 512 tokens on the default hardware.

With spilled codes the prediction runs in blocks of rows (passes/spls_block_prediction.py:
once per chunk before it) and odd blocks visit the K-head groups backwards, so a block's
first BPU is not head 0's. Its shared mask rows are LOADed once per block (per chunk, into
one of two slots, in the chunk form this test was written for); they
were LOADed at head 0, so the heads before it ADDed the slot's rows of two chunks back (or a
slot never written) to their PAM, and TOPK ranked wrong rows (the score path PAM_SCORES
reads them now): the binary differed from the
INT8 interpreter (BERT-base 512, attention=topk: max |diff| 0.043; here 0.11). The LOAD now
comes at the block's first head, whichever it is.
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np

from esact_cc import api
from esact_cc.runtime.isa import Buffer, footprint

SEQ, HIDDEN, HEADS = 128, 64, 8
HW = ('name = "spilled-keys"\n[sram]\nmask_buffer = 6144\nactivation_buffer = 8192\n'
      'vector_buffer = 32768\n')
"""MBUF holds no H x L x L SPA (ring form), ABUF not the K^ codes of all keys beside the
chunk's Q^ codes (spilled, K heads LOADed in groups)."""
OPTIONS = {"sparsity": "spls",
           "sparsity_option": ["attention=topk", "threshold=0.4", "window=3"]}


def _heads_per_block(ins: list) -> list[list[int]]:
    """The query heads of each prediction block in BPU order (Q^ operand offset / head dim):
    with spilled codes the block form (passes/spls_block_prediction.py) predicts a block of
    rows head by head, then decides its chunks."""
    blocks, addrs = [], []
    for x in ins:
        if x.opcode_name == "bpu_scores":
            addrs.append(x.fields["a_addr"])
        elif x.opcode_name == "similarity" and addrs:
            blocks.append([(a - min(addrs)) // (HIDDEN // HEADS) for a in addrs])
            addrs = []
    return blocks


def _mask_writer(ins: list, scores: int) -> int:
    """The last instruction before the score path `scores` (BPU_SCORES) that wrote the mask
    rows it reads (its VBUF operand at add_mask_addr)."""
    (mask,) = [r for r in footprint(ins[scores]).reads
               if r[0] == Buffer.VBUF and r[1] == ins[scores].fields["add_mask_addr"]]
    return next(i for i in range(scores - 1, -1, -1)
                if any(w[0] == mask[0] and w[1] < mask[2] and mask[1] < w[2]
                       for w in footprint(ins[i]).writes))


def test_shared_mask_rows_are_loaded_in_every_chunk_with_spilled_key_codes(
        tmp_path: Path) -> None:
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128,
                                   seed=3, expanded_mask=True)
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
    hw = tmp_path / "spilled_keys.toml"
    hw.write_text(HW)
    compiled = api.compile(model, stage="esact", hw=str(hw), **OPTIONS)
    program = compiled.program()
    ins = program.instructions

    blocks = _heads_per_block(ins)
    assert len(blocks) > 2 and all(sorted(c) == list(range(HEADS)) for c in blocks)
    assert any(c[0] != 0 for c in blocks)  # spilled: some blocks start at a later K group
    sims = [i for i, x in enumerate(ins) if x.opcode_name == "similarity"]
    scores = [i for i, x in enumerate(ins) if x.opcode_name == "bpu_scores"]
    assert all(ins[i].fields["has_add_mask"] for i in scores)
    assert len(scores) == HEADS * len(blocks)
    feeding = set()
    for a in scores:  # every head adds mask rows LOADed in its own block
        writer = _mask_writer(ins, a)
        assert ins[writer].opcode_name == "load"
        assert writer > max((s for s in sims if s < a), default=-1)
        feeding.add(writer)
    assert len(feeding) == len(blocks)  # once per block

    result = compiled.simulate(inputs, hw=str(hw))
    expected = api.compile(model, stage="sparsity", **OPTIONS).run(inputs)
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  expected["last_hidden_state"])
    assert result.report["spls"]["reused_rows"] > 0
