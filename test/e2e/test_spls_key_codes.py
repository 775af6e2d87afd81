"""Where the SPLS prediction's phase 2 reads the K^ codes (passes/spls_key_codes.py).

- Grouped- and multi-query decoders: K^ is projected for the K heads only ([D, N + Nk] code
  columns) and each query head's BPU reads its K head's codes (row stride Nk); the binary
  equals the INT8 interpreter bit for bit.
- K^ codes of all keys over ABUF (as BERT-base's at 2048 tokens exceed the default ABUF;
  here ABUF refuses them while the prediction places them): they go to a DRAM scratch once
  per batch element and come back per group of K heads for every block of rows (the block
  form, passes/spls_block_prediction.py: fewer blocks than chunks); the binary equals the
  one where they stay on chip (same hardware, chunk form) bit for bit, with the same reused
  rows, and the LOADs are as many as the alternating group order implies.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import encoder_graphs
import numpy as np
import pytest

from esact_cc import api
from esact_cc.passes.spls_key_codes import SpilledKeys
from esact_cc.passes.spls_streamed_projection import StreamedProjection
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

_spec = importlib.util.spec_from_file_location("decoder_graphs",
                                              Path(__file__).with_name("decoder_graphs.py"))
decoder_graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decoder_graphs)  # type: ignore[union-attr]

SPLS = {"sparsity": "spls", "sparsity_option": ["threshold=0.5", "window=2"]}


def _bpus(program, opcode: str) -> list:
    """The projection's BPU instructions ("bpu") or the PAM's ("bpu_scores")."""
    return [i for i in program.instructions if i.opcode_name == opcode]


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_grouped_query_prediction_projects_the_key_heads_only(kv_heads: int) -> None:
    heads, hidden = 4, 32
    model = decoder_graphs.decoder(layers=1, seq=8, hidden=hidden, heads=heads,
                                   kv_heads=kv_heads)
    inputs = decoder_graphs.decoder_inputs(seq=8)
    compiled = api.compile(model, stage="esact", **SPLS)
    program = compiled.program()
    k_width = kv_heads * hidden // heads
    # The projection's column tiles cover Q^ and K^ once: N + Nk columns, not 2N.
    assert sum(i.fields["n"] for i in _bpus(program, "bpu")) == hidden + k_width
    assert {i.fields["b_stride"] for i in _bpus(program, "bpu_scores")} == {k_width}
    got = compiled.simulate(inputs).outputs["last_hidden_state"]
    expected = api.compile(model, stage="sparsity", **SPLS).run(inputs)["last_hidden_state"]
    np.testing.assert_array_equal(got, expected)


SEQ, HIDDEN, HEADS = 256, 128, 16
SMALL_BUFFERS = ('name = "small-buffers"\n[sram]\nactivation_buffer = 36864\n'
                 'vector_buffer = 131072\n')
"""X and Q^ / K^ of all rows over ABUF: the projection runs over row tiles
(`StreamedProjection`), whose K^ codes of every key (256 x 128) still fit."""


def _refuse_key_codes_on_chip(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the prediction places its K^ codes, ABUF refuses a region of all K heads' codes:
    the spilled form on hardware where the rest of the program fits (on these small models an
    ABUF too small for K^ is too small for the attention's tiles as well)."""

    @contextlib.contextmanager
    def refused(lw, c) -> Iterator[None]:
        def alloc(buf: Buffer, size: int) -> int:
            if buf == Buffer.ABUF and size >= c.length * c.k_width:
                raise CompileError("ABUF: refused by the test")
            return type(lw).alloc(lw, buf, size)

        lw.alloc = alloc
        try:
            yield
        finally:
            del lw.alloc

    release, plan = StreamedProjection.release, SpilledKeys.plan

    def refused_release(self, lw, c) -> None:
        with refused(lw, c):
            release(self, lw, c)

    def refused_plan(lw, c, projection) -> SpilledKeys:
        with refused(lw, c):
            return plan(lw, c, projection)

    monkeypatch.setattr(StreamedProjection, "release", refused_release)
    monkeypatch.setattr(SpilledKeys, "plan", staticmethod(refused_plan))


@pytest.mark.parametrize("kind", ["encoder", "causal-decoder"])
def test_key_codes_over_abuf_come_back_per_head_group_bit_exact(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "encoder":
        model = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=128,
                                       seed=3)
        inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
    else:
        model = decoder_graphs.decoder(layers=1, seq=SEQ, hidden=HIDDEN, heads=HEADS,
                                       kv_heads=HEADS)
        inputs = decoder_graphs.decoder_inputs(seq=SEQ)
    hw = tmp_path / "small_buffers.toml"
    hw.write_text(SMALL_BUFFERS)
    resident = api.compile(model, stage="esact", hw=str(hw), **SPLS)
    expected = resident.simulate(inputs, hw=str(hw))
    _refuse_key_codes_on_chip(monkeypatch)
    spilled = api.compile(model, stage="esact", hw=str(hw), **SPLS)
    program = spilled.program()
    d = HIDDEN // HEADS
    all_keys = [i for i in program.instructions
                if i.opcode_name == "load" and i.fields["buf"] == Buffer.ABUF
                and i.fields["rows"] == SEQ and i.fields["dram_stride"] == HIDDEN]
    scratch = all_keys[0].fields["dram_addr"]  # the first group's: the [L, Nk] INT8 codes
    group_loads = [i for i in all_keys if scratch <= i.fields["dram_addr"] < scratch + HIDDEN]
    code_stores = [i for i in program.instructions
                   if i.opcode_name == "store" and i.fields["buf"] == Buffer.ABUF
                   and scratch <= i.fields["dram_addr"] < scratch + SEQ * HIDDEN]
    assert sum(i.fields["rows"] for i in code_stores) == SEQ  # every key's codes, once
    widths = sorted({i.fields["cols"] for i in group_loads})
    assert widths[-1] < HIDDEN and all(w % d == 0 for w in widths)
    groups = -(-HEADS // (widths[-1] // d))
    # Row pieces predicted per K^ load: blocks (passes/spls_block_prediction.py), each
    # head's BPU once per block.
    blocks = len(_bpus(program, "bpu_scores")) // HEADS
    chunks = sum(1 for i in program.instructions if i.opcode_name == "similarity")
    assert 1 < blocks < chunks
    assert groups > 1 and len(group_loads) == groups + (blocks - 1) * (groups - 1)
    assert not any(i.opcode_name == "load" and i.fields["buf"] == Buffer.ABUF
                   and i.fields["rows"] == SEQ and i.fields["dram_addr"] == scratch
                   for i in resident.program().instructions)
    result = spilled.simulate(inputs, hw=str(hw))
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  expected.outputs["last_hidden_state"])
    reused = result.report["spls"]["reused_rows"]
    assert 0 < reused == expected.report["spls"]["reused_rows"]
