"""Masks streamed through a small MBUF compile at every size where they fit, not only where the
ring allocator happens to leave a large enough contiguous gap: the chunk's SPA rows take their
region before the persistent masks, and spilled SPA tiles are planned with room for two in
flight wherever the first lands (these sizes failed with "MBUF: no room" before). The binary
still equals the INT8 reference interpreter bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from esact_cc import api

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "test" / "fixtures" / "models" / "bert_tiny_legacy17.onnx"  # 16 tokens, 4 heads
INPUTS = dict(np.load(MODEL.with_suffix(".inputs.npz")))


@pytest.mark.parametrize(("scheme", "options", "mask_buffer"), [
    ("sanger", [], 96),
    ("sanger", [], 224),
    ("spls", ["attention=topk"], 352),
    ("spls", ["attention=topk"], 864),
])
def test_streamed_masks_fit_small_mask_buffers(tmp_path: Path, scheme: str, options: list[str],
                                               mask_buffer: int) -> None:
    hw = tmp_path / "small_mbuf.toml"
    hw.write_text(f'name = "small-mbuf"\n[sram]\nmask_buffer = {mask_buffer}\n')
    compiled = api.compile(str(MODEL), stage="esact", sparsity=scheme, sparsity_option=options,
                           hw=str(hw))
    got = compiled.simulate(INPUTS, hw=str(hw)).outputs["last_hidden_state"]
    expected = api.compile(str(MODEL), stage="sparsity", sparsity=scheme,
                           sparsity_option=options).run(INPUTS)["last_hidden_state"]
    np.testing.assert_array_equal(got, expected)
