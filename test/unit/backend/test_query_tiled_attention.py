"""Dense attention whose [lq, lk] scores do not fit on chip is tiled over query rows
(passes/lower_attention.py `_attention_tiling`): each tile holds whole key rows, so its softmax is
the untiled one and the program stays bit-identical to the INT8 reference interpreter; K / V
are loaded once per head group, not once per tile. Attention that fits is not tiled (the
golden binaries pin that)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.passes import attention_shared_mask
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

from esact_cc.api import parse_ir
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.quantized_kernels import quant_multiplier
from esact_cc.weight_store import WeightStore

K_SCALE = 0.04


def _attention_ir(batch: int, length: int, heads: int, width: int, causal: bool,
                  mask: str | None) -> str:
    t = f"tensor<{batch}x{length}x{width}xf32>"
    mask_type = {"row": f"tensor<{batch}x1x1x{length}xf32>",
                 "full": f"tensor<{batch}x1x{length}x{length}xf32>"}.get(mask or "")
    mask_arg = f', %m: {mask_type} {{onnx.name = "m"}}' if mask_type else ""
    return f"""
func.func @main(%q: {t} {{onnx.name = "q"}}, %k: {t} {{onnx.name = "k"}},
                %v: {t} {{onnx.name = "v"}}{mask_arg}) -> ({t} {{onnx.name = "y"}}) {{
  %y = transformer.attention %q, %k, %v{" mask %m" if mask_type else ""} heads({heads}) scale(0.5)
       {"causal " if causal else ""}q_scale(0.05) k_scale({K_SCALE}) v_scale(0.03) p_scale(0.0078740157) :
       ({t}, {t}, {t}{", " + mask_type if mask_type else ""}) -> {t}
  func.return %y : {t}
}}
"""


def _inputs(batch: int, length: int, width: int, mask: str | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(length)
    values = {n: rng.standard_normal((batch, length, width)).astype(np.float32) for n in "qkv"}
    if mask == "row":
        m = np.zeros((batch, 1, 1, length), np.float32)
        m[..., -3:] = -10000.0
        values["m"] = m
    elif mask == "full":
        values["m"] = np.where(rng.random((batch, 1, length, length)) < 0.3, -10000.0,
                               0.0).astype(np.float32)
    return values


def _small_vbuf(tmp_path: Path) -> str:
    """A vector buffer whose quarter holds 16 x 40 scores: 40 query rows take 3 tiles."""
    path = tmp_path / "vbuf.toml"
    path.write_text(f"[sram]\nvector_buffer = {4 * 4 * 16 * 40}\n")
    return str(path)


def _compile(module, store, hw: str | None):
    for step in (LowerToEsactPass(hw=hw, store=store), SchedulePass()):
        step.apply(make_context(), module)
    return program_from_module(module, store)


@pytest.mark.parametrize(("causal", "mask"), [(False, None), (True, None), (False, "row"),
                                              (False, "full"), (True, "full")])
def test_query_tiles_equal_the_interpreter(causal: bool, mask: str | None,
                                           tmp_path: Path) -> None:
    batch, length, heads, width = 2, 40, 2, 8
    module = parse_ir(_attention_ir(batch, length, heads, width, causal, mask))
    store = WeightStore({})
    inputs = _inputs(batch, length, width, mask)
    expected = run_module(module, inputs, store)["y"]
    hw = _small_vbuf(tmp_path)
    program = _compile(module, store, hw)
    qk = [op for op in module.walk() if op.name == "esact.attn_qk"]
    assert sorted({op.properties["lq"].value.data for op in qk}) == [12, 14]  # 14 + 14 + 12
    assert len(qk) == batch * heads * 3
    k_mult = float(quant_multiplier(K_SCALE))
    k_quants = [op for op in module.walk()
                if op.name == "esact.quant" and op.properties["mult"].value.data == k_mult]
    assert len(k_quants) == batch  # K loaded once per batch element and head group
    result = run_program(program, inputs, load_config(hw))
    np.testing.assert_array_equal(result.outputs["y"], expected)


def test_per_query_mask_rows_are_loaded_once_per_tile_for_the_head_group(
        tmp_path: Path) -> None:
    """A [B, 1, Lq, Lk] mask is the same for every head: each query tile's rows are LOADed once
    for the head group, not once per head (BERT at 512 tokens: the top-k attention was bound
    by those reLOADs); the result stays the interpreter's bit for bit."""
    batch, length, heads, width = 2, 40, 2, 8
    module = parse_ir(_attention_ir(batch, length, heads, width, False, "full"))
    store = WeightStore({})
    inputs = _inputs(batch, length, width, "full")
    expected = run_module(module, inputs, store)["y"]
    hw = _small_vbuf(tmp_path)
    program = _compile(module, store, hw)
    mask_loads = [op for op in module.walk() if op.name == "esact.load"
                  and op.properties["cols"].value.data == length
                  and op.properties["rows"].value.data > 1]
    tiles = len([op for op in module.walk() if op.name == "esact.attn_qk"]) // (batch * heads)
    assert tiles == 3 and len(mask_loads) == batch * tiles  # heads share each tile's rows
    result = run_program(program, inputs, load_config(hw))
    np.testing.assert_array_equal(result.outputs["y"], expected)


def _mask_loads(module, length: int) -> int:
    """LOADs of several mask rows (the [Lq, Lk] mask's query tiles)."""
    return len([op for op in module.walk() if op.name == "esact.load"
                and op.properties["cols"].value.data == length
                and op.properties["rows"].value.data > 1])


def test_shared_mask_tiles_stay_resident_across_head_groups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two head groups (a small ABUF) over three query tiles (a small ACC): the [B, 1, Lq, Lk]
    mask's tiles are LOADed once per batch element for both groups while VBUF has room
    (passes/attention_shared_mask.py), once per group without it; bit-identical either way."""
    batch, length, heads, width = 2, 40, 4, 64
    hw = tmp_path / "small.toml"
    hw.write_text("[sram]\nactivation_buffer = 8192\naccumulator_buffer = 5120\n")
    inputs = _inputs(batch, length, width, "full")
    store = WeightStore({})
    expected = run_module(parse_ir(_attention_ir(batch, length, heads, width, False, "full")),
                          inputs, store)["y"]
    counts = []
    for room in (True, False):
        if not room:  # as when VBUF holds no tile beside the attention's own
            monkeypatch.setattr(attention_shared_mask, "_tiles_that_fit", lambda *_: 0)
        module = parse_ir(_attention_ir(batch, length, heads, width, False, "full"))
        program = _compile(module, store, str(hw))
        qk = [op for op in module.walk() if op.name == "esact.attn_qk"]
        assert len(qk) == batch * heads * 3  # three query tiles per head
        counts.append(_mask_loads(module, length))
        result = run_program(program, inputs, load_config(str(hw)))
        np.testing.assert_array_equal(result.outputs["y"], expected)
    assert counts == [batch * 3, batch * 2 * 3]  # resident: once per batch; else per group


def test_attention_that_fits_is_one_tile() -> None:
    module = parse_ir(_attention_ir(1, 40, 2, 8, False, None))
    _compile(module, WeightStore({}), None)
    qk = [op for op in module.walk() if op.name == "esact.attn_qk"]
    assert [op.properties["lq"].value.data for op in qk] == [40, 40]


def test_no_query_row_fits_names_the_attention(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(f"[sram]\nvector_buffer = {4 * 4 * 30}\n")  # a quarter: 30 < 40 scores
    module = parse_ir(_attention_ir(1, 40, 2, 8, False, None))
    with pytest.raises(CompileError, match=r"attention over 40x40 does not fit .*not even one "
                                           r"query row"):
        _compile(module, WeightStore({}), str(path))


def test_bert_base_attention_at_512_tokens_compiles_dense_and_is_bit_exact() -> None:
    """BERT-base attention (hidden 768, 12 heads) at 512 tokens with a padding mask:
    [512, 512] scores exceed a quarter of the default VBUF, so it runs in 4 query tiles."""
    length, hidden, heads = 512, 768, 12
    module = parse_ir(_attention_ir(1, length, heads, hidden, False, "row"))
    store = WeightStore({})
    inputs = _inputs(1, length, hidden, "row")
    expected = run_module(module, inputs, store)["y"]
    program = _compile(module, store, None)
    qk = [op for op in module.walk() if op.name == "esact.attn_qk"]
    assert {op.properties["lq"].value.data for op in qk} == {128} and len(qk) == heads * 4
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["y"], expected)
