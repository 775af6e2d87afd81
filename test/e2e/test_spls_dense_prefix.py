"""SPLS `dense-prefix`: the layer's Q linear (`q`), or Q and the attention (`attention`), left
dense, so the MAC array computes them beside the prediction's projection (with K and V)
instead of after the decisions.

The output projection skips reused rows and gives them its representative's row either way, so
the binary's output equals the `dense-prefix=none` binary's bit for bit with the same reused
rows; the prefix's GEMMs / attention read no row mask, sit among the projection's instructions
(before the first SIMILARITY) and end before the last one, and the run takes fewer cycles.
The report counts the prefix as computed for every row (its saving is forgone, honestly
charged).
"""

from __future__ import annotations

import encoder_graphs
import numpy as np
import pytest

from esact_cc import api
from esact_cc.dialects import transformer
from esact_cc.ir_queries import main_function
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.isa import Buffer

SEQ, HEADS = 32, 4
SETTING = ["threshold=0.4", "window=3"]
INPUTS = encoder_graphs.encoder_inputs(seq=SEQ, padding=3)
PREFIX_OPS = {"q": ("gemm",), "attention": ("gemm", "attn_qk", "attn_pv")}
"""Opcodes of each prefix's MAC work (component q; attention: qk, pv)."""


@pytest.fixture(scope="module")
def model():
    return encoder_graphs.encoder(layers=1, seq=SEQ, hidden=64, heads=HEADS, ffn=128, seed=3)


@pytest.fixture(scope="module")
def unprefixed(model):
    return _compile(model, "none").simulate(INPUTS)


def _compile(model, prefix: str, stage: str = "esact", extra: tuple[str, ...] = (),
             **options):
    return api.compile(model, stage=stage, sparsity="spls",
                       sparsity_option=[*SETTING, f"dense-prefix={prefix}", *extra], **options)


@pytest.mark.parametrize("prefix", ["q", "attention"])
def test_dense_prefix_leaves_only_its_ops_unmasked(model, prefix: str) -> None:
    ir = _compile(model, prefix, stage="sparsity")
    ops = [op for op in main_function(ir.module).walk()
           if isinstance(op, (transformer.LinearOp, transformer.AttentionOp))]
    masked = {op.attributes["role"].data: op.is_masked for op in ops}
    assert masked == {"q": False, "k": False, "v": False,  # K, V: attention=dense, as before
                      "attention": prefix != "attention", "o": True, "ffn_up": True,
                      "ffn_down": True}


@pytest.mark.parametrize("prefix", ["q", "attention"])
def test_prefix_runs_beside_the_projection_with_the_same_output(model, unprefixed,
                                                                prefix: str) -> None:
    compiled = _compile(model, prefix)
    program = compiled.program()
    ins = program.instructions
    sims = [i for i, x in enumerate(ins) if x.opcode_name == "similarity"]
    components = ("q",) if prefix == "q" else ("q", "qk", "pv")
    early = [i for i, x in enumerate(ins) if x.opcode_name in PREFIX_OPS[prefix]
             and program.debug[i].component in components]
    result = compiled.simulate(INPUTS)
    assert len(early) >= len(components)
    assert all(ins[i].fields["has_row_mask"] == 0 for i in early)
    assert max(early) < sims[0]
    assert max(result.schedule.end[i] for i in early) < result.schedule.end[sims[-1]]
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  unprefixed.outputs["last_hidden_state"])
    assert 0 < result.report["spls"]["reused_rows"] == unprefixed.report["spls"]["reused_rows"]
    if prefix == "attention":
        # On this 32-token layer the attention prefix no longer pays once the attention's
        # head blocks are kept on chip for O (86cc7e1): O then waits on the prediction it was
        # moved beside (5,774 vs 5,613 cycles), while the unprefixed O gains the on-chip
        # hand-off (6,038 -> 5,613). Through DRAM the prefix pays (8,950 vs 9,203); BERT-base
        # 128's dense-prefix setting is measured by bench/long_sequence.py (1.020x dense).
        result, unprefixed = (_compile(model, p, keep_on_chip=False).simulate(INPUTS)
                              for p in ("attention", "none"))
    assert result.report["total"]["cycles"] < unprefixed.report["total"]["cycles"]
    # The prefix's saving is forgone: more MACs executed than with reused rows skipped.
    assert result.report["total"]["macs_executed"] > unprefixed.report["total"]["macs_executed"]


def test_dense_prefix_attention_needs_the_dense_attention_mode(model) -> None:
    with pytest.raises(EsactError, match="dense-prefix=attention needs attention=dense"):
        _compile(model, "attention", stage="sparsity", extra=("attention=topk",))
    with pytest.raises(EsactError, match="dense-prefix"):
        _compile(model, "ffn", stage="sparsity")


@pytest.mark.parametrize("setting", [SETTING, ["threshold=-1.0"]])
def test_output_projection_runs_per_prediction_group(model, tmp_path, setting) -> None:
    """An 8-row MAC array: 8-row prediction chunks, so O's GEMMs take four row groups, each
    after its own chunk's SIMILARITY while the BPU predicts the next (spls_output_groups), its
    input quantized after chunk 0 (the attention's tail and the chain's first SFU work first). With
    threshold -1 every row but the first reuses row 0, so each later group's reused rows take a
    representative from the first group (the SCATTER over the rows so far)."""
    hw = tmp_path / "rows8.toml"
    # A 64-lane BPU, so that the prediction outlasts the prefix: with 512 lanes and the score
    # path (PAM_SCORES) this small layer's chain ends before its attention does.
    hw.write_text('name = "rows-8"\n[mac_array]\nrows = 8\n[bpu]\nlanes = 64\n')
    runs = {}
    for prefix in ("none", "attention"):
        compiled = api.compile(model, stage="esact", hw=str(hw), sparsity="spls",
                               sparsity_option=[*setting, f"dense-prefix={prefix}"])
        runs[prefix] = (compiled.program(), compiled.simulate(INPUTS, hw=str(hw)))
    program, result = runs["attention"]
    ins = program.instructions
    sims = [i for i, x in enumerate(ins) if x.opcode_name == "similarity"]
    o = [i for i, x in enumerate(ins) if x.opcode_name == "gemm"
         and program.debug[i].component == "o"]
    assert len(sims) == SEQ // 8 and [ins[i].fields["m"] for i in o] == [8] * len(o)
    assert min(o) < sims[-1]  # emitted among the chain's chunks
    # O's input is quantized after chunk 0 (`place "append"`), not in front of its SFU work.
    node = program.debug[o[0]].node
    prepared = [i for i, x in enumerate(ins)
                if i in program.debug and program.debug[i].node == node and (
                    x.opcode_name in ("quant", "quant_rows")
                    or x.opcode_name == "load" and x.fields["buf"] == Buffer.ABUF)]
    assert prepared and sims[0] < min(prepared) and max(prepared) < o[0]
    assert result.schedule.start[o[0]] < result.schedule.end[sims[-1]]
    reference = runs["none"][1]
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  reference.outputs["last_hidden_state"])
    reused = result.report["spls"]["reused_rows"]
    assert 0 < reused == reference.report["spls"]["reused_rows"]
