"""keep-on-chip of results written in several tiles (passes/on_chip_activations.py `Region`):
the producer computes each row chunk / row tile / head block straight into one VBUF region of
the whole result, which stays there for its readers like a one-tile result; outputs are the
DRAM round trip's bit for bit and the DRAM traffic saved is exactly the STOREs and LOADs of
those results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from esact_cc.dialects import esact
from esact_cc.passes.on_chip_activations import SUMMARY_ATTR
from helpers.onnx_graph_builder import GraphBuilder
from onnx import TensorProto, helper

from esact_cc import api

L, HIDDEN = 64, 64
F32 = 4
SMALL = "[sram]\nvector_buffer = 65536\nactivation_buffer = 4096\n"
"""16384 FP32 in VBUF: a layer norm of 64 x 64 runs in two 32-row chunks (an eighth of VBUF
each); 4 KiB of ABUF: a 64-input linear in two 32-row tiles. Kept results may hold 8192."""


def _model(relu_reader: bool = False):
    """x -> h = LayerNorm(x) -> a = h W1 + b1 -> out = a W2 + b2 + h (a fused residual ADD
    reading h): h and a are each written in two tiles; `relu_reader`: + Relu(h) instead of h,
    a host op reading h from DRAM."""
    g = GraphBuilder(HIDDEN, np.random.default_rng(5))
    h = g.layer_norm("x", "ln")
    a = g.linear(h, "fc1", HIDDEN, HIDDEN)
    b = g.linear(a, "fc2", HIDDEN, HIDDEN)
    other = g.node("Relu", [h], "relu") if relu_reader else h
    g.nodes.append(helper.make_node("Add", [b, other], ["out"], name="residual"))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, L, HIDDEN]) for n in ("x", "out")]
    graph = helper.make_graph(g.nodes, "regions", io[:1], io[1:], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compile(tmp_path: Path, model, keep: bool, hw: str):
    x = np.random.default_rng(0).standard_normal((8, 1, L, HIDDEN)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    return api.compile(model, stage="esb", calibration_data=str(tmp_path / "calib.npz"),
                       keep_on_chip=keep, hw=hw)


def _instructions(compiled, name: str) -> list[esact.InstructionOp]:
    return [op for op in compiled.module.body.block.ops
            if isinstance(op, esact.InstructionOp) and op.name == f"esact.{name}"]


def test_results_written_in_several_tiles_stay_in_one_region(tmp_path: Path) -> None:
    hw = tmp_path / "small.toml"
    hw.write_text(SMALL)
    model = _model()
    through, kept = _compile(tmp_path, model, False, str(hw)), _compile(tmp_path, model, True, str(hw))
    x = np.random.default_rng(1).standard_normal((1, L, HIDDEN)).astype(np.float32)
    before, after = through.simulate({"x": x}, str(hw)), kept.simulate({"x": x}, str(hw))
    assert np.array_equal(before.outputs["out"], after.outputs["out"])
    # through DRAM: h and a STOREd in two tiles each, h LOADed by fc1 and fc2's residual, a by fc2
    assert [op.field_value("rows") for op in _instructions(through, "layernorm")] == [32, 32]
    assert len(_instructions(through, "gemm")) == 4  # two row tiles per linear
    saved = F32 * L * HIDDEN * 5
    assert before.report["total"]["dram_bytes"] - after.report["total"]["dram_bytes"] == saved
    assert after.report["total"]["cycles"] < before.report["total"]["cycles"]
    assert kept.module.attributes[SUMMARY_ATTR].data == (
        "keep-on-chip: 2 activation(s) kept in VBUF (32.0 KiB not stored and loaded back), "
        "0 through DRAM")
    assert len(_instructions(kept, "store")) == 2  # the output's two row tiles only
    stored = {op.field_value("dram_addr") for op in _instructions(through, "store")}
    assert not stored & {op.field_value("dram_addr") for op in _instructions(kept, "load")}


def test_attention_heads_write_their_column_blocks_of_one_kept_region() -> None:
    import encoder_graphs

    model = encoder_graphs.encoder(layers=1, seq=16, hidden=32, heads=4, ffn=64, seed=2)
    inputs = encoder_graphs.encoder_inputs(seq=16)
    through = api.compile(model, stage="esb", keep_on_chip=False)
    kept = api.compile(model, stage="esb")
    before, after = through.simulate(inputs), kept.simulate(inputs)
    for name, value in before.outputs.items():
        assert np.array_equal(value, after.outputs[name]), name
    # each head's P x V is dequantized into its 8 columns of the [16, 32] result, rows 32 apart
    heads = [op for op in _instructions(kept, "dequant") if op.field_value("dst_stride") == 32]
    assert [op.field_value("cols") for op in heads] == [8] * 4
    # the result's four column-block STOREs and the output projection's LOAD are gone
    saved = F32 * 16 * 32 * 2
    assert before.report["total"]["dram_bytes"] - after.report["total"]["dram_bytes"] >= saved


def test_a_region_over_a_quarter_of_vbuf_goes_through_dram(tmp_path: Path) -> None:
    # 8192 FP32 in VBUF: h and a (64 x 64 = 4096 each, written in 16-row chunks / 32-row
    # tiles) would each hold half of it from their producer to their last reader
    hw = tmp_path / "smaller.toml"
    hw.write_text("[sram]\nvector_buffer = 32768\nactivation_buffer = 4096\n")
    model = _model()
    through, kept = _compile(tmp_path, model, False, str(hw)), _compile(tmp_path, model, True, str(hw))
    x = np.random.default_rng(1).standard_normal((1, L, HIDDEN)).astype(np.float32)
    before, after = through.simulate({"x": x}, str(hw)), kept.simulate({"x": x}, str(hw))
    assert np.array_equal(before.outputs["out"], after.outputs["out"])
    assert before.report["total"]["dram_bytes"] == after.report["total"]["dram_bytes"]
    reason = "written in several tiles, over the VBUF share of one region"
    assert kept.module.attributes[SUMMARY_ATTR].data == (
        "keep-on-chip: 0 activation(s) kept in VBUF (0.0 KiB not stored and loaded back), "
        f'2 through DRAM (transformer.layer_norm at "ln/LayerNorm": {reason}; '
        f'transformer.linear at "fc1/MatMul": {reason})')


def test_a_result_a_reader_loads_anyway_gets_no_region(tmp_path: Path) -> None:
    # h is STOREd for the Relu (a host op) whatever happens: a region would hold VBUF from the
    # layer norm to fc1 for fc1's LOADs only (an SPLS prediction's input is such a result)
    hw = tmp_path / "small.toml"
    hw.write_text(SMALL)
    model = _model(relu_reader=True)
    through, kept = _compile(tmp_path, model, False, str(hw)), _compile(tmp_path, model, True, str(hw))
    x = np.random.default_rng(1).standard_normal((1, L, HIDDEN)).astype(np.float32)
    assert np.array_equal(through.simulate({"x": x}, str(hw)).outputs["out"],
                          kept.simulate({"x": x}, str(hw)).outputs["out"])
    assert kept.module.attributes[SUMMARY_ATTR].data == (
        "keep-on-chip: 3 activation(s) kept in VBUF (48.0 KiB not stored and loaded back), "
        '1 through DRAM (transformer.layer_norm at "ln/LayerNorm": written in several tiles, '
        "read from DRAM too)")  # h is not among the kept
