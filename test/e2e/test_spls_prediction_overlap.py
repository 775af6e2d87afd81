"""The SPLS prediction's ring form with a per-query attention mask (BERT's expanded [B, 1, L, L]
padding mask), as BERT-base takes it on the default hardware at 128 tokens and beyond.

A small BERT-style encoder whose padding mask is expanded to [1, 1, L, L] (per query, the same
block for every head) on hardware whose MBUF is shrunk so the SPA does not fit (ring form):
- the mask rows of a chunk are LOADed once per chunk and read by every head's score path
  (PAM_SCORES adds them to the head's PAM rows; not LOADed once per head: the same DRAM bytes
  12 times for BERT-base);
- the Q linear's input preparation (LOAD, QUANT_ROWS) runs before the chain's first
  SIMILARITY, so the in-order SFU queue does not hold it behind every chunk's DEQUANT and
  SOFTMAX, and Q's first chunk GEMM starts before the prediction of the last chunk ends;
- Q's GEMMs take whole prediction chunks grouped to fill the MAC array's rows (not one GEMM
  per chunk: BERT-base's 8-row chunks at 512 tokens used a quarter of a 32-row array);
- the binary equals the whole-row binary of the default hardware bit for bit, with the same
  reused rows.
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import onnx
from onnx import helper, numpy_helper

from esact_cc import api
from esact_cc.runtime.isa import Buffer, footprint

SEQ, HEADS = 32, 4
OPTIONS = {"sparsity": "spls", "sparsity_option": ["threshold=0.4", "window=3"]}
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)


def expanded_mask_encoder() -> onnx.ModelProto:
    """encoder_graphs' encoder with its [1, 1, 1, L] mask expanded to [1, 1, L, L] before the
    score Adds (as transformers' BERT export does)."""
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([1, 1, SEQ, SEQ], np.int64),
                                                     "c_expand"))
    expand = helper.make_node("Expand", ["/mask/Mul", "c_expand"], ["/mask/Expand"],
                              name="/mask/Expand")
    nodes = list(graph.node)
    for node in nodes:
        if node.op_type == "Add" and "/mask/Mul" in node.input:
            node.input[list(node.input).index("/mask/Mul")] = "/mask/Expand"
    at = next(k for k, node in enumerate(nodes) if node.name == "/mask/Mul") + 1
    nodes.insert(at, expand)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def small_mbuf(tmp_path: Path, mac_rows: int = 32) -> str:
    """A config whose MBUF holds no H x L x L SPA (ring form), with `mac_rows` array rows."""
    path = tmp_path / f"mbuf_{mac_rows}.toml"
    path.write_text(f'name = "small-mbuf-{mac_rows}"\n[sram]\nmask_buffer = 1024\n'
                    f'[mac_array]\nrows = {mac_rows}\n')
    return str(path)


def same_as_whole_row_binary(model: onnx.ModelProto, result) -> None:
    whole = api.compile(model, stage="esact", **OPTIONS).simulate(INPUTS)
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  whole.outputs["last_hidden_state"])
    assert 0 < result.report["spls"]["reused_rows"] == whole.report["spls"]["reused_rows"]


def test_ring_form_loads_a_shared_mask_block_once_per_chunk_and_prepares_q_early(
        tmp_path: Path) -> None:
    # An 8-row array: every prediction chunk (5-6 rows here) is one Q GEMM of its own.
    model, hw = expanded_mask_encoder(), small_mbuf(tmp_path, mac_rows=8)
    compiled = api.compile(model, stage="esact", hw=hw, **OPTIONS)
    program = compiled.program()
    ins = program.instructions

    def component(i: int) -> str:
        return program.debug[i].component if i in program.debug else ""

    sims = [i for i, x in enumerate(ins) if x.opcode_name == "similarity"]
    assert len(sims) > 1 and all(ins[i].fields["has_ring"] for i in sims)
    scores = [i for i, x in enumerate(ins) if x.opcode_name == "bpu_scores"]
    assert all(ins[i].fields["has_add_mask"] and ins[i].fields["add_mask_rows"] for i in scores)
    assert len(scores) == HEADS * len(sims)  # every head's PAM rows of every chunk get the mask
    # The instruction each score path's mask operand comes from: the last writer of the VBUF
    # region it reads at add_mask_addr.
    feeding = set()
    for a in scores:
        (mask,) = [r for r in footprint(ins[a]).reads
                   if r[0] == Buffer.VBUF and r[1] == ins[a].fields["add_mask_addr"]]
        writer = max(i for i in range(a) if footprint(ins[i]).touches(*mask)
                     and any(w[0] == mask[0] and w[1] < mask[2] and mask[1] < w[2]
                             for w in footprint(ins[i]).writes))
        assert ins[writer].opcode_name == "load"
        feeding.add(writer)
    assert len(feeding) == len(sims)  # one LOAD per chunk, not one per head and chunk
    quant_rows = [i for i, x in enumerate(ins) if x.opcode_name == "quant_rows"
                  and program.debug[i].node.endswith("/query/MatMul")]
    assert quant_rows and max(quant_rows) < sims[0]

    result = compiled.simulate(INPUTS, hw=hw)
    q_gemms = [i for i, x in enumerate(ins) if x.opcode_name == "gemm" and component(i) == "q"]
    assert result.schedule.start[q_gemms[0]] < result.schedule.end[sims[-1]]
    same_as_whole_row_binary(model, result)


def test_q_gemms_group_whole_prediction_chunks_to_fill_the_mac_rows(tmp_path: Path) -> None:
    model, hw = expanded_mask_encoder(), small_mbuf(tmp_path)
    compiled = api.compile(model, stage="esact", hw=hw, **OPTIONS)
    program = compiled.program()
    chunks = [x.fields["row_count"] for x in program.instructions
              if x.opcode_name == "similarity"]
    assert len(chunks) > 1 and sum(chunks) == SEQ and max(chunks) < 32
    groups: list[int] = []  # greedy: add the next chunk while the rows fit the array's 32
    for rows in chunks:
        if groups and groups[-1] + rows <= 32:
            groups[-1] += rows
        else:
            groups.append(rows)
    assert len(groups) < len(chunks)
    q_rows = [x.fields["m"] for i, x in enumerate(program.instructions)
              if x.opcode_name == "gemm" and program.debug[i].component == "q"]
    column_tiles = len(q_rows) // len(groups)
    assert q_rows == groups * column_tiles  # column tiles outer, row groups inner
    same_as_whole_row_binary(model, compiled.simulate(INPUTS, hw=hw))


def test_k_and_v_run_beside_the_projection_in_the_activation_buffer_it_leaves(
        tmp_path: Path) -> None:
    """ABUF too small for K's and V's whole input beside the projection's tiles (streamed at
    6144 elements, whole at 10240): their row tiles shrink to the room left, so they are still
    lowered beside it and run while the BPU projects, instead of after the whole chain."""
    model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)
    for abuf, streamed in ((6144, True), (10240, False)):
        hw = tmp_path / f"abuf_{abuf}.toml"
        hw.write_text(f'name = "abuf-{abuf}"\n[sram]\nactivation_buffer = {abuf}\n')
        compiled = api.compile(model, stage="esact", hw=str(hw), **OPTIONS)
        program = compiled.program()
        ins = program.instructions
        hlogs = [x for x in ins if x.opcode_name == "hlog"]
        assert any(x.fields["scale_count"] for x in hlogs) == streamed
        first_similarity = next(i for i, x in enumerate(ins) if x.opcode_name == "similarity")
        kv = [i for i, x in enumerate(ins) if x.opcode_name == "gemm"
              and program.debug[i].component in ("k", "v")]
        # Row tiles, the first among the projection's instructions (the ordering step puts
        # those expected to start after the projection after the chain: `sink`).
        assert len(kv) > 2 and min(kv) < first_similarity
        result = compiled.simulate(INPUTS, hw=str(hw))
        same_as_whole_row_binary(model, result)


def test_q_column_tiles_run_chunk_by_chunk(tmp_path: Path) -> None:
    """An ACC small enough for two column tiles of Q (8-row array, ring form): the ordering step
    interleaves them by chunk (`prediction_overlap.chunk_major`: the second tile's weights in
    the other WBUF bank), so the in-order compute queue runs both tiles of chunk c after
    SIMILARITY c instead of every GEMM of the second tile after the last chunk."""
    model = expanded_mask_encoder()
    hw = tmp_path / "acc.toml"
    hw.write_text('name = "small-acc"\n[sram]\nmask_buffer = 1024\naccumulator_buffer = 8192\n'
                  '[mac_array]\nrows = 8\n')
    compiled = api.compile(model, stage="esact", hw=str(hw), **OPTIONS)
    program = compiled.program()
    ins = program.instructions
    q = [i for i, x in enumerate(ins) if x.opcode_name == "gemm"
         and program.debug[i].component == "q"]
    banks = [ins[i].fields["w_addr"] for i in q]
    assert len(set(banks)) == 2 and all(a != b for a, b in zip(banks, banks[1:]))
    rows = [ins[i].fields["m"] for i in q]
    assert rows[0::2] == rows[1::2]  # chunk by chunk, both column tiles of each
    same_as_whole_row_binary(model, compiled.simulate(INPUTS, hw=str(hw)))
