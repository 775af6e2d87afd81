"""A dense linear of several row tiles does not LOAD the same weight tile twice in a row
(passes/lower_linear.py): its column tiles stay in WBUF for the whole linear when they fit
its free banks, else row tiles alternate their column order (serpentine) and each starts with
the weight tile the previous one ended with. The binary still equals the INT8 interpreter bit
for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_linear_row_tile_pipelining import K, N, ROWS, SMALL_ABUF, mlp

from esact_cc import api
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer
from esact_cc.runtime.run_program import run_program


def weight_loads_and_gemms(program, k: int) -> tuple[list[int], int]:
    """The DRAM addresses of the WBUF LOADs of the linear with `k` inputs, in program order,
    and its GEMM count (one per row tile and column tile: one input group)."""
    gemms = sum(1 for ins in program.instructions
                if ins.opcode_name == "gemm" and ins.fields["k"] == k)
    loads = [ins.fields["dram_addr"] for ins in program.instructions
             if ins.opcode_name == "load" and ins.fields["buf"] == Buffer.WBUF
             and ins.fields["rows"] == k]
    return loads, gemms


@pytest.mark.parametrize(("weight_buffer", "resident"), [(8192, False), (16384, True)])
def test_row_tiles_reuse_the_weight_tiles_they_hold(tmp_path: Path, weight_buffer: int,
                                                   resident: bool) -> None:
    """8 KiB WBUF: 4 column tiles per linear, serpentine; 16 KiB: 2, both banks resident."""
    path, hw = tmp_path / "mlp.onnx", tmp_path / "small.toml"
    mlp(path)
    hw.write_text(SMALL_ABUF + f"weight_buffer = {weight_buffer}\n")
    x = np.random.default_rng(1).normal(0, 1, (1, ROWS, K)).astype(np.float32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).normal(0, 1, (4, 1, ROWS, K)).astype(np.float32))
    program = api.compile(path, stage="esb", hw=str(hw), calibration_data=str(calib)).program()
    golden = api.compile(path, stage="quantized", calibration_data=str(calib)).run({"x": x})
    result = run_program(program, {"x": x}, load_config(str(hw)))
    np.testing.assert_array_equal(result.outputs["y"], golden["y"])

    for k in (K, N):  # the up and the down projection
        loads, gemms = weight_loads_and_gemms(program, k)
        columns = len(set(loads))
        row_tiles = gemms // columns
        assert row_tiles >= 3 and columns == (2 if resident else 4)
        # Reloading every tile per row tile would be row_tiles * columns LOADs.
        expected = columns if resident else columns + (row_tiles - 1) * (columns - 1)
        assert len(loads) == expected
        assert all(a != b for a, b in zip(loads, loads[1:]))
