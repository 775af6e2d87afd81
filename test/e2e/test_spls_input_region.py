"""Keep-on-chip around a predicted layer: the SPLS prediction's input X, written by its layer
norm in several row chunks, is kept in one VBUF region (passes/on_chip_activations.py) that
the prediction's HLOG, the Q / K / V GEMMs and the attention's residual all read, as the dense
program does, instead of a STORE and five LOADs per layer; when the K / V linears lowered
beside the projection then no longer fit beside it, their results go through DRAM and they
stay beside the projection (passes/spls_beside_chain.py `lower_early`). Outputs bit-identical
to the DRAM round trip and to the reference interpreter. A [1, 1, L, L] mask the ring-form chain
LOADs chunk by chunk into one block is read there by the attention (passes/
attention_shared_mask.py), not LOADed again."""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
from esact_cc.dialects import esact
from esact_cc.runtime.isa import Buffer

from esact_cc import api

SEQ, HIDDEN, HEADS = 128, 384, 12
SPLS = {"sparsity": "spls", "sparsity_option": ["threshold=0.5", "window=4"]}
INPUTS = ["/encoder/layer.0/output/LayerNorm/LayerNormalization",
          "/embeddings/LayerNorm/LayerNormalization"]
"""The layer norms whose outputs the two layers' predictions read (128 x 384: 85-row chunks)."""
SMALLER_VBUF = "[sram]\nvector_buffer = 917504\n"
"""7/8 of the default VBUF: layer 0's K and V output tiles no longer both fit beside X."""


def _model():
    return encoder_graphs.encoder(layers=2, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=HIDDEN,
                                  seed=3)


def _instructions(compiled: api.CompiledModel) -> list[esact.InstructionOp]:
    return [op for op in compiled.module.body.block.ops if isinstance(op, esact.InstructionOp)]


def _stores_at(compiled: api.CompiledModel, node: str) -> int:
    return sum(1 for op in _instructions(compiled)
               if op.name == "esact.store" and f'"{node}"' in str(op.location))


def _check_outputs(model, compiled: api.CompiledModel, inputs: dict, hw: str | None = None):
    result = compiled.simulate(inputs, hw)
    reference = api.compile(model, stage="sparsity", **SPLS).run(inputs)
    for name, value in reference.items():
        assert np.array_equal(result.outputs[name], value), name
    return result


def test_a_prediction_input_written_in_row_chunks_stays_on_chip() -> None:
    model, inputs = _model(), encoder_graphs.encoder_inputs(seq=SEQ, padding=0)
    kept = api.compile(model, stage="esact", **SPLS)
    through = api.compile(model, stage="esact", keep_on_chip=False, **SPLS)
    for node in INPUTS:
        assert _stores_at(kept, node) == 0, node
        assert _stores_at(through, node) > 0, node
    after = _check_outputs(model, kept, inputs)
    before = through.simulate(inputs)
    assert after.report["spls"]["reused_rows"] == before.report["spls"]["reused_rows"] > 0
    # X is STOREd (128 x 384 FP32) and LOADed by the HLOG, Q, K, V and the residual no more
    assert before.report["total"]["dram_bytes"] - after.report["total"]["dram_bytes"] \
        >= 6 * 4 * SEQ * HIDDEN * len(INPUTS)
    assert after.report["total"]["cycles"] < before.report["total"]["cycles"]


def test_k_and_v_beside_the_projection_go_through_dram_when_x_takes_their_room(
        tmp_path: Path) -> None:
    hw = tmp_path / "smaller_vbuf.toml"
    hw.write_text(SMALLER_VBUF)
    model, inputs = _model(), encoder_graphs.encoder_inputs(seq=SEQ, padding=0)
    kept = api.compile(model, stage="esact", hw=str(hw), **SPLS)
    program = _instructions(kept)
    layer0 = '"/encoder/layer.0/attention/self/'
    first_scores = min(k for k, op in enumerate(program) if op.name == "esact.bpu_scores"
                       and layer0 in str(op.location))
    for linear in ("key", "value"):
        node = f"/encoder/layer.0/attention/self/{linear}/MatMul"
        gemms = [k for k, op in enumerate(program)
                 if op.name == "esact.gemm" and f'"{node}"' in str(op.location)]
        assert gemms and max(gemms) < first_scores, linear  # beside the projection
        assert _stores_at(kept, node) == 1, linear  # its result through DRAM
    assert _stores_at(kept, INPUTS[-1]) == 0  # X stays on chip
    _check_outputs(model, kept, inputs, str(hw))


def _mask_row_bytes(compiled: api.CompiledModel, layer: int) -> int:
    """FP32 bytes of [rows, SEQ] VBUF LOADs of layer `layer`'s prediction and attention (the
    per-query mask's rows: nothing else they LOAD into VBUF is SEQ wide with 16+ rows)."""
    node = f'"/encoder/layer.{layer}/attention/self/Softmax"'
    total = 0
    for op in _instructions(compiled):
        if op.name == "esact.load" and node in str(op.location):
            f = op.to_instruction()  # type: ignore[attr-defined]
            if f["buf"] == Buffer.VBUF and f["cols"] == SEQ and f["rows"] >= 16:
                total += 4 * f["rows"] * f["cols"]
    return total


def test_the_attention_reads_the_mask_block_the_prediction_loaded() -> None:
    # BERT's expanded [1, 1, L, L] mask: the ring-form chain LOADs it a chunk's rows at a
    # time into one block, which the attention then reads instead of LOADing it again
    model = encoder_graphs.encoder(layers=2, seq=SEQ, hidden=HIDDEN, heads=HEADS, ffn=HIDDEN,
                                   seed=3, expanded_mask=True)
    inputs = encoder_graphs.encoder_inputs(seq=SEQ, padding=5)
    kept = api.compile(model, stage="esact", **SPLS)
    for layer in range(2):
        assert _mask_row_bytes(kept, layer) == 4 * SEQ * SEQ, layer
    assert _check_outputs(model, kept, inputs).report["spls"]["reused_rows"] > 0
