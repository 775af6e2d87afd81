"""keep-on-chip's eviction and spill paths (passes/on_chip_activations.py): when an op's tile
finds no room in VBUF beside the kept results, the oldest one it does not read is evicted, else
the oldest it has already read (its QUANTs emitted); either is STOREd right after its producer
(`lowering.spill` names why) and its later readers LOAD it. A select_rows of rows from several
images of a kept result copies them on chip. Outputs are the DRAM round trip's bit for bit. A kept result an instruction LOADs is STOREd right after its producer too."""

from __future__ import annotations

from pathlib import Path

import encoder_graphs
import numpy as np
import onnx
import pytest
from esact_cc.dialects import esact, transformer
from esact_cc.passes import lowering_state
from esact_cc.passes.lowering_state import load_gamma_beta
from esact_cc.passes.on_chip_activations import SPILL_ATTR, SUMMARY_ATTR
from esact_cc.runtime.isa import Buffer
from helpers.onnx_graph_builder import GraphBuilder
from onnx import TensorProto, helper
from vit_graph import vit_model

from esact_cc import api

ATTENTION = 'transformer.attention at "/encoder/layer.0/attention/self/Softmax"'


def _spills(compiled) -> list[tuple[esact.InstructionOp, esact.InstructionOp]]:
    """(the instruction before, the spill STORE) of each spill STORE of the program."""
    ops = [op for op in compiled.module.body.block.ops if isinstance(op, esact.InstructionOp)]
    return [(ops[i - 1], op) for i, op in enumerate(ops) if SPILL_ATTR in op.attributes]


def _same_outputs(through, kept, inputs, hw: str | None = None) -> None:
    before, after = through.simulate(inputs, hw), kept.simulate(inputs, hw)
    for name, value in before.outputs.items():
        assert np.array_equal(value, after.outputs[name]), name


@pytest.mark.parametrize("vbuf, evicted, reason", [
    # 128 Ki FP32: the embeddings' layer norm (read by the residual ADD only) makes room for
    # the attention's [128, 64] tile
    (131072, '"/embeddings/LayerNorm/LayerNormalization"',
     f"evicted (for a 8192-element tile of {ATTENTION})"),
    # 256 Ki: nothing else to evict, Q (its QUANTs emitted) makes room for a score tile
    (262144, '"/encoder/layer.0/attention/self/query/MatMul"',
     f"evicted (its reads emitted, for a 16384-element tile of {ATTENTION})"),
])
def test_an_evicted_result_is_stored_after_its_producer(tmp_path: Path, vbuf, evicted,
                                                        reason) -> None:
    hw = tmp_path / "vbuf.toml"
    hw.write_text(f"[sram]\nvector_buffer = {vbuf}\n")
    model = encoder_graphs.encoder(layers=1, seq=128, hidden=64, heads=4, ffn=128, seed=3,
                                   expanded_mask=True)
    through = api.compile(model, stage="esb", keep_on_chip=False, hw=str(hw))
    kept = api.compile(model, stage="esb", hw=str(hw))
    _same_outputs(through, kept, encoder_graphs.encoder_inputs(seq=128), str(hw))
    assert f"{evicted}: {reason}" in kept.module.attributes[SUMMARY_ATTR].data
    spills = [(before, store) for before, store in _spills(kept)
              if store.attributes[SPILL_ATTR].data == reason]
    assert spills and all(str(store.location) == str(before.location)  # after its producer
                          and store.field_value("rows") * store.field_value("cols") == 128 * 64
                          for before, store in spills)


def test_kept_results_that_crowd_out_an_spls_attention_are_evicted_after_their_reads() -> None:
    # An SPLS encoder at 256 tokens with BERT's expanded [B, 1, L, L] mask: the attention reads
    # kept Q, K, V while the prediction still reads the kept X, and its 256 x 256 mask tile
    # finds no room beside them: Q, its QUANTs emitted, is evicted (the whole program used to
    # be selected again through DRAM)
    model = encoder_graphs.encoder(layers=1, seq=256, hidden=64, heads=4, ffn=128, seed=3,
                                   expanded_mask=True)
    options = {"sparsity": "spls", "sparsity_option": ["threshold=0.5", "window=8"]}
    kept = api.compile(model, stage="esb", **options)
    through = api.compile(model, stage="esb", keep_on_chip=False, **options)
    _same_outputs(through, kept, encoder_graphs.encoder_inputs(seq=256))
    summary = kept.module.attributes[SUMMARY_ATTR].data
    assert summary.startswith("keep-on-chip: 9 activation(s) kept in VBUF")
    assert summary.endswith(f"evicted (its reads emitted, for a 65536-element tile of {ATTENTION}))")


def test_a_select_rows_of_a_kept_result_copies_its_rows_on_chip(tmp_path: Path) -> None:
    # a ViT at batch 2: the last layer computes each image's class row only, a select_rows of
    # rows 0 and 17 of the kept layer norm: one SCATTER_ROWS copy with rows 17 x 32 apart
    # (it was a STORE of the layer norm and a LOAD of the two rows)
    path = tmp_path / "vit_b2.onnx"
    onnx.save(vit_model(2), path)
    images = np.random.default_rng(1).uniform(0, 1, (8, 2, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", pixel_values=images)
    calibration = str(tmp_path / "calib.npz")
    through = api.compile(path, stage="esb", calibration_data=calibration, keep_on_chip=False)
    kept = api.compile(path, stage="esb", calibration_data=calibration)
    _same_outputs(through, kept, {"pixel_values": images[0]})
    copies = [op for op in kept.module.body.block.ops if isinstance(op, esact.InstructionOp)
              and op.name == "esact.scatter_rows" and op.field_value("src_stride") == 17 * 32]
    assert [(op.field_value("rows"), op.field_value("cols")) for op in copies] == [(2, 32)] * 2
    assert not _spills(kept)
    assert kept.module.attributes[SUMMARY_ATTR].data.endswith(", 0 through DRAM")


def _loading_layer_norm(lw, op) -> None:
    """A layer-norm rule that LOADs its input from DRAM (as a rule without a VBUF-reading
    lowering does), whole."""
    x = lw.f32_tensor(op.x, "x")
    rows, n = x.rows, x.cols
    g = load_gamma_beta(lw, op, n)
    v = lw.alloc(Buffer.VBUF, rows * n)
    lw.load(Buffer.VBUF, v, x.address, rows, n)
    lw.emit("layernorm", "sfu", dst_addr=v, src_addr=v, rows=rows, cols=n, gamma_addr=g,
            beta_addr=g + n, eps=float(op.epsilon.value.data))
    lw.write_tile(op.result, v, 0, rows, 0, n)
    lw.free(Buffer.VBUF, v, g)


def test_a_kept_result_an_instruction_loads_is_stored_after_its_producer(tmp_path: Path,
                                                                        monkeypatch) -> None:
    # x -> a = x W1 + b1 -> LayerNorm(a) -> out = . W2 + b2, the layer norm's rule LOADing a:
    # a is kept (a layer norm reads VBUF), so the LOAD puts a STORE of it right after fc1
    import esact_cc.passes.lower_to_esact  # noqa: F401  (the built-in rules registered first)

    monkeypatch.setitem(lowering_state._LOWERINGS, transformer.LayerNormOp, _loading_layer_norm)
    g = GraphBuilder(32, np.random.default_rng(4))
    a = g.linear("x", "fc1", 32, 32)
    g.linear(g.layer_norm(a, "ln"), "fc2", 32, 32)
    g.nodes[-1].output[0] = "out"
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 16, 32]) for n in ("x", "out")]
    model = helper.make_model(helper.make_graph(g.nodes, "spill", io[:1], io[1:], g.inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((8, 1, 16, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    options = {"stage": "esb", "calibration_data": str(tmp_path / "calib.npz")}
    through = api.compile(model, keep_on_chip=False, **options)
    kept = api.compile(model, **options)
    inputs = {"x": x[0]}
    _same_outputs(through, kept, inputs)
    ((before, store),) = _spills(kept)
    assert store.attributes[SPILL_ATTR].data.startswith("LOADed by transformer.layer_norm")
    assert str(before.location) == str(store.location) == 'loc("fc1/MatMul")'
    assert (store.field_value("rows"), store.field_value("cols")) == (16, 32)
    # the same bytes as the DRAM round trip: a STOREd once and LOADed once either way
    assert (kept.simulate(inputs).report["total"]["dram_bytes"]
            == through.simulate(inputs).report["total"]["dram_bytes"])
