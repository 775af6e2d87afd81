"""keep-on-chip (passes/on_chip_activations.py): a result its producer computes as one VBUF tile
stays there for its readers instead of a STORE and LOADs through DRAM; outputs are the DRAM
round trip's bit for bit, the DRAM traffic saved is exactly those STOREs and LOADs, a result
over the VBUF share goes through DRAM (said in the summary), and a reader that LOADs a kept
result gets a STORE placed right after its producer (`lowering.spill`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects import esact
from esact_cc.passes.on_chip_activations import SPILL_ATTR, SUMMARY_ATTR
from helpers.onnx_graph_builder import GraphBuilder
from onnx import TensorProto, helper

from esact_cc import api

L, HIDDEN, FFN = 16, 64, 128
F32 = 4


def _model(relu_reader: bool = False, middle: bool = False):
    """x -> h = LayerNorm(x) -> a = h W1 + b1 -> out = a W2 + b2 + h (the residual: a fused ADD
    reading h); `relu_reader`: out = a W2 + b2 + Relu(h) instead, Relu reading h by a LOAD;
    `middle`: a = (h W1 + b1) Wm + bm, a third result live beside h and the first."""
    g = GraphBuilder(HIDDEN, np.random.default_rng(3))
    h = g.layer_norm("x", "ln")
    a = g.linear(h, "fc1", HIDDEN, FFN)
    if middle:
        a = g.linear(a, "fcm", FFN, FFN)
    b = g.linear(a, "fc2", FFN, HIDDEN)
    other = g.node("Relu", [h], "relu") if relu_reader else h
    g.nodes.append(helper.make_node("Add", [b, other], ["out"], name="residual"))
    graph = helper.make_graph(
        g.nodes, "keep_on_chip", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, L, HIDDEN])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, L, HIDDEN])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _compile(tmp_path: Path, model, keep: bool, hw: str | None = None):
    x = np.random.default_rng(0).standard_normal((8, 1, L, HIDDEN)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    return api.compile(model, stage="esb", calibration_data=str(tmp_path / "calib.npz"),
                       keep_on_chip=keep, hw=hw)


def _run(compiled, hw: str | None = None):
    x = np.random.default_rng(1).standard_normal((1, L, HIDDEN)).astype(np.float32)
    return compiled.simulate({"x": x}, hw)


def _summary(compiled) -> str:
    return compiled.module.attributes[SUMMARY_ATTR].data


def test_kept_results_skip_their_dram_round_trip_bit_identically(tmp_path: Path) -> None:
    model = _model(relu_reader=False)
    through, kept = _compile(tmp_path, model, False), _compile(tmp_path, model, True)
    before, after = _run(through), _run(kept)
    assert np.array_equal(before.outputs["out"], after.outputs["out"])
    # h (stored once, LOADed by fc1 and by fc2's residual ADD) and a (stored, LOADed by fc2)
    saved = F32 * L * (HIDDEN * 3 + FFN * 2)
    assert before.report["total"]["dram_bytes"] - after.report["total"]["dram_bytes"] == saved
    assert after.report["total"]["cycles"] < before.report["total"]["cycles"]
    assert _summary(kept).startswith("keep-on-chip: 2 activation(s) kept in VBUF (12.0 KiB")
    assert SUMMARY_ATTR not in through.module.attributes
    stores = [op for op in kept.module.body.block.ops
              if isinstance(op, esact.InstructionOp) and op.name == "esact.store"]
    assert len(stores) == 1  # the output; no activation STORE is left


def test_result_over_the_vbuf_share_goes_through_dram(tmp_path: Path) -> None:
    # 32 KiB VBUF: kept results may hold 4096 FP32; h (1024) and fc1's result (2048) are,
    # the middle linear's (2048) would pass that while they live
    hw = tmp_path / "small_vbuf.toml"
    hw.write_text("[sram]\nvector_buffer = 32768\n")
    model = _model(middle=True)
    through, kept = _compile(tmp_path, model, False, str(hw)), _compile(tmp_path, model, True, str(hw))
    assert np.array_equal(_run(through, str(hw)).outputs["out"], _run(kept, str(hw)).outputs["out"])
    summary = _summary(kept)
    assert summary.startswith("keep-on-chip: 2 activation(s) kept")
    assert summary.endswith("1 through DRAM (transformer.linear at \"fcm/MatMul\": over the "
                            "VBUF share of kept activations)")


def test_a_reader_that_loads_the_result_has_it_stored_by_its_producer(tmp_path: Path) -> None:
    model = _model(relu_reader=True)  # Relu LOADs its input (no VBUF-reading lowering)
    through, kept = _compile(tmp_path, model, False), _compile(tmp_path, model, True)
    assert np.array_equal(_run(through).outputs["out"], _run(kept).outputs["out"])
    program = [op for op in kept.module.body.block.ops if isinstance(op, esact.InstructionOp)]
    names = [op.name for op in program]
    at = names.index("esact.layernorm")
    assert names[at + 1] == "esact.store" and SPILL_ATTR not in program[at + 1].attributes
    h_address = program[at + 1].field_value("dram_addr")
    readers = [op for op in program if op.name == "esact.load"
               and op.field_value("dram_addr") == h_address]
    assert [str(op.location) for op in readers] == ['loc("relu")']  # fc1 reads h on chip


@pytest.mark.parametrize("flag, kept", [([], True), (["--no-keep-on-chip"], False)])
def test_cli_flag_and_summary_line(tmp_path: Path, capsys, flag, kept) -> None:
    from esact_cc.cli.esact_cc_main import main

    path = tmp_path / "m.onnx"
    path.write_bytes(_model(relu_reader=False).SerializeToString())
    _compile(tmp_path, _model(relu_reader=False), True)  # writes calib.npz
    assert main([str(path), "--calibration-data", f"x={tmp_path / 'calib.npz'}:x", "-o",
                 str(tmp_path / "m.esb"), "--no-cache", *flag]) == 0
    err = capsys.readouterr().err
    assert ("keep-on-chip: 2 activation(s) kept" in err) is kept

