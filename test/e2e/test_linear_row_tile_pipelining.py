"""A dense linear of several row tiles prepares the next row tile's input (LOAD, QUANT_ROWS
into its own ABUF region) while the current tile's GEMMs run (passes/lower_linear.py,
`_ahead_column`): the MAC array does not wait for it at each row-tile boundary. The binary
still equals the INT8 interpreter bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

ROWS, K, N = 96, 64, 256
SMALL_ABUF = '[sram]\nactivation_buffer = 4096\n'
"""3/4 of it holds 48 rows of 64 inputs: several row tiles, two of them in flight."""


def mlp(path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (K, N)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (N, K)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="up"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="down")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ROWS, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, ROWS, K])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def bit_exact_mlp_program(tmp_path: Path, hw_text: str):  # noqa: ANN201 - an esb Program
    """The MLP compiled for the hardware `hw_text` describes, after checking that its binary
    equals the INT8 interpreter bit for bit on a seeded input."""
    path, hw = tmp_path / "mlp.onnx", tmp_path / "small.toml"
    mlp(path)
    hw.write_text(hw_text)
    x = np.random.default_rng(1).normal(0, 1, (1, ROWS, K)).astype(np.float32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).normal(0, 1, (4, 1, ROWS, K)).astype(np.float32))
    program = api.compile(path, stage="esb", hw=str(hw), calibration_data=str(calib)).program()
    golden = api.compile(path, stage="quantized", calibration_data=str(calib)).run({"x": x})
    result = run_program(program, {"x": x}, load_config(str(hw)))
    np.testing.assert_array_equal(result.outputs["y"], golden["y"])
    return program


def test_next_row_tile_is_quantized_during_this_ones_gemms(tmp_path: Path) -> None:
    program = bit_exact_mlp_program(tmp_path, SMALL_ABUF)
    instructions = program.instructions
    gemms = [(i, ins.fields["a_addr"]) for i, ins in enumerate(instructions)
             if ins.opcode_name == "gemm" and ins.fields["k"] == K]  # the first linear's
    runs: list[list[tuple[int, int]]] = []  # its row tiles: GEMMs reading one ABUF region
    for index, region in gemms:
        if runs and runs[-1][-1][1] == region:
            runs[-1].append((index, region))
        else:
            runs.append([(index, region)])
    assert len(runs) >= 3  # several row tiles, consecutive ones in their own ABUF regions
    for this, following in zip(runs, runs[1:]):
        first_gemm, last_gemm = this[0][0], this[-1][0]
        last_dequant = min(i for i, ins in enumerate(instructions)
                           if ins.opcode_name == "dequant" and i > last_gemm)
        first_quant = min(i for i, ins in enumerate(instructions)
                          if ins.opcode_name == "quant_rows" and i > first_gemm
                          and ins.fields["dst_addr"] == following[0][1])
        assert first_quant < last_dequant  # queued on the SFU before this tile's work ends
