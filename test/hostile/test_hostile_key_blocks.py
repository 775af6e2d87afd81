"""Hardware on which not even one query row over one chunk of keys fits (the smallest block of
the key-blocked attention, passes/lower_attention_blocks.py): esact-cc ends with one
`esact-cc: error:` line naming the attention and what does not fit, exit 1, no traceback, no
binary written."""

from __future__ import annotations

from pathlib import Path

from hostile_run import assert_user_error, run_tool, tree_state

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "test" / "fixtures" / "models" / "bert_tiny_legacy17.onnx"  # 16 tokens, 4 heads


def test_attention_without_room_for_one_key_block_is_one_error(tmp_path: Path):
    hw = tmp_path / "tiny.toml"
    hw.write_text("[sram]\nactivation_buffer = 256\n")
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "-o", "out.esb", "--hw", hw, "--no-cache",
                      cwd=tmp_path)
    assert_user_error(result, 'transformer.attention at "/model/encoder/layer.0/attention/self/',
                      "attention over 16x16 does not fit the on-chip buffers",
                      "not even one query row over 16 keys fits")
    assert tree_state(tmp_path) == before
