"""Small sweep specs for the tests (the bundled digits ViT, a few test samples)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TINY = """
[sweep]
inputs = [0]
accuracy_samples = 3

[[models]]
name = "digits-vit"

[[sparsity]]
scheme = "dense"
[[sparsity]]
scheme = "spls"
options = { threshold = [0.9] }

[hardware.axes]
"mac_array.rows" = [16, 32]
"dram.bandwidth_bytes_per_s" = [8e9, 64e9]
"bpu.lanes" = [256, 512]
"""
# 2 sparsity settings x 2 MAC shapes x 2 BPU lanes compile groups, 2 DRAM bandwidths each;
# the BPU lanes change only the SPLS program on 16 MAC rows (where the prediction goes), so
# 5 distinct programs are executed: dense x 2 MAC shapes, SPLS x (16 rows x 2 lanes, 32 rows)
TINY_POINTS, TINY_GROUPS, TINY_EXECUTIONS = 16, 8, 5
FORMATS = ("csv", "parquet") if importlib.util.find_spec("pyarrow") else ("csv",)
"""The tables a whole tiny sweep writes (Parquet when pyarrow is installed)."""


def write_spec(directory: Path, text: str = TINY) -> Path:
    path = directory / "sweep.toml"
    path.write_text(text)
    return path
