"""A dense linear of several row tiles does not LOAD the same weight tile twice in a row
(passes/linear_weight_tiles.py): its column tiles, LOADed in groups that fill a WBUF bank, stay
in WBUF for the whole linear when the groups fit its free banks, else row tiles alternate
their group order (serpentine) and each starts with the group the previous one ended with.
The binary still equals the INT8 interpreter bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_linear_row_tile_pipelining import K, N, SMALL_ABUF, bit_exact_mlp_program

from esact_cc.runtime.isa import Buffer


def weight_loads_and_gemms(program, k: int) -> tuple[list[int], int]:
    """The DRAM addresses of the WBUF LOADs of the linear with `k` inputs, in program order,
    and its GEMM count (one per row tile and column tile: one input group)."""
    gemms = sum(1 for ins in program.instructions
                if ins.opcode_name == "gemm" and ins.fields["k"] == k)
    loads = [ins.fields["dram_addr"] for ins in program.instructions
             if ins.opcode_name == "load" and ins.fields["buf"] == Buffer.WBUF
             and ins.fields["rows"] == k]
    return loads, gemms


CASES = {
    # WBUF 8 KiB: 4 column tiles a linear, one per 4 KiB bank: serpentine.
    "serpentine": ("weight_buffer = 8192", {K: (4, 1), N: (4, 1)}),
    # 16 KiB: 2 column tiles, both banks resident.
    "resident": ("weight_buffer = 16384", {K: (2, 1), N: (2, 1)}),
    # A 4 KiB ACC makes the up projection's column tiles 16 wide: 4 share a bank (a group),
    # 4 groups in serpentine order; the down projection's fill a bank each.
    "grouped": ("weight_buffer = 8192\naccumulator_buffer = 4096", {K: (16, 4), N: (4, 1)}),
    # 8 of its 32-wide tiles in 2 groups of 4: both resident.
    "grouped-resident": ("weight_buffer = 16384\naccumulator_buffer = 8192",
                         {K: (8, 4), N: (2, 1)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_row_tiles_reuse_the_weight_tiles_they_hold(tmp_path: Path, case: str) -> None:
    buffers, tiling = CASES[case]
    program = bit_exact_mlp_program(tmp_path, SMALL_ABUF + buffers + "\n")

    for k, (columns, per_group) in tiling.items():  # the up and the down projection
        loads, gemms = weight_loads_and_gemms(program, k)
        row_tiles = gemms // columns
        assert len(set(loads)) == columns and row_tiles >= 3
        # Reloading every tile per row tile would be row_tiles * columns LOADs; serpentine
        # groups keep one group (per_group tiles) across each row-tile boundary.
        resident = columns // per_group <= 2
        expected = columns if resident else columns + (row_tiles - 1) * (columns - per_group)
        assert len(loads) == expected
