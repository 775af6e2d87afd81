"""spls-no-reuse (passes/spls_no_reuse.py): a layer that can reuse no row (threshold above
every score, or window 0) and has a top-k attention keeps only the prediction that attention
reads; its binary equals the binary with the similarity bit for bit.

A small BERT-style encoder (hidden 64, 4 heads, 32 tokens, padding), on the default hardware
(every mask on chip) and with MBUF shrunk so the SPA does not fit (the ring form: SPA rows
STOREd per head as soon as ranked, no SIMILARITY).
"""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import pytest
from esact_cc.dialects import spls, transformer
from esact_cc.runtime.isa import Buffer

from esact_cc import api
from esact_cc.dialect_registry import make_context
from esact_cc.pipeline import CompileOptions, continue_pipeline, make_pass

SEQ, HEADS = 32, 4
MODEL = encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
NO_REUSE = ["attention=topk", "threshold=1.01", "k-ratio=0.25"]


def _hw(tmp_path: Path, mbuf: int | None) -> dict[str, str]:
    if mbuf is None:
        return {}
    path = tmp_path / "mbuf.toml"
    path.write_text(f'name = "small-mbuf-{mbuf}"\n[sram]\nmask_buffer = {mbuf}\n')
    return {"hw": str(path)}


def _with_similarity(options: list[str], hw: dict[str, str]) -> api.CompiledModel:
    """The program insert-spls alone gives (the similarity kept), lowered."""
    compiled = api.compile(MODEL, stage="quantized")
    pass_options = dict(o.replace("-", "_").split("=") for o in options)
    pass_options["threshold"] = float(pass_options.get("threshold", 0.995))
    pass_options["k_ratio"] = float(pass_options.get("k_ratio", 0.2))
    pass_options["window"] = int(pass_options.get("window", 8))
    make_pass("insert-spls", compiled.store, **pass_options).apply(make_context(),
                                                                   compiled.module)
    continue_pipeline(compiled.module, compiled.store, "sparsity", "esact",
                      CompileOptions(extra=hw))
    return api.CompiledModel(compiled.module, compiled.store, "esact")


def _opcodes(compiled: api.CompiledModel) -> list[str]:
    return [i.opcode_name for i in compiled.program().instructions]


@pytest.mark.parametrize("options", [NO_REUSE, ["attention=topk", "window=0", "threshold=0.5"]],
                         ids=["threshold", "window0"])
def test_the_ir_keeps_only_what_the_topk_attention_reads(options: list[str]) -> None:
    module = api.compile(MODEL, stage="sparsity", sparsity="spls", sparsity_option=options).module
    ops = list(module.walk())
    assert not any(isinstance(op, spls.LocalSimilarityOp) for op in ops)
    assert sum(isinstance(op, spls.TopKOp) for op in ops) == 1
    linears = [op for op in ops if isinstance(op, transformer.LinearOp)]
    assert linears and all(op.rows is None and op.keys is None for op in linears)
    attentions = [op for op in ops if isinstance(op, transformer.AttentionOp)]
    assert len(attentions) == 1 and attentions[0].rows is None and attentions[0].spa is not None


@pytest.mark.parametrize("options", [["threshold=1.01"], ["attention=topk", "threshold=1.0"]],
                         ids=["dense-attention", "threshold-1-can-reuse"])
def test_a_layer_that_can_reuse_or_reads_no_spa_keeps_its_similarity(options) -> None:
    module = api.compile(MODEL, stage="sparsity", sparsity="spls", sparsity_option=options).module
    assert any(isinstance(op, spls.LocalSimilarityOp) for op in module.walk())


@pytest.mark.parametrize("mbuf", [None, 2048], ids=["whole-rows", "ring"])
def test_binary_equals_the_one_with_the_similarity(tmp_path: Path, mbuf: int | None) -> None:
    hw = _hw(tmp_path, mbuf)
    dropped = api.compile(MODEL, stage="esact", sparsity="spls", sparsity_option=NO_REUSE, **hw)
    kept = _with_similarity(NO_REUSE, hw)
    assert "similarity" in _opcodes(kept) and "scatter_rows" in _opcodes(kept)
    names = _opcodes(dropped)
    assert "similarity" not in names and "scatter_rows" not in names
    assert "bpu_scores" in names  # the padding mask is added to the PAM
    runs = [c.simulate(INPUTS, hw=hw.get("hw")) for c in (dropped, kept)]
    np.testing.assert_array_equal(runs[0].outputs["last_hidden_state"],
                                  runs[1].outputs["last_hidden_state"])
    assert runs[0].report["energy"]["on_chip"]["energy_pj"] < \
        runs[1].report["energy"]["on_chip"]["energy_pj"]
    if mbuf is not None:  # ring form: each head's SPA rows STOREd once ranked, a chunk per head
        stores = [i for i in dropped.program().instructions
                  if i.opcode_name == "store" and i.fields["buf"] == Buffer.MBUF]
        chunks = len(stores) // HEADS
        assert chunks * HEADS == len(stores) and sum(i.fields["rows"] for i in stores) == \
            HEADS * SEQ
