"""Small sweep specs for the tests (the bundled digits ViT, a few test samples)."""

from __future__ import annotations

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
"sfu.lanes" = [32, 64]
"""
TINY_POINTS, TINY_GROUPS = 16, 4  # 2 sparsity x 2 MAC shapes; x 2 x 2 re-timed each


def write_spec(directory: Path, text: str = TINY) -> Path:
    path = directory / "sweep.toml"
    path.write_text(text)
    return path
