"""SPATTEN_SCORE in query tiles: when a per-query additive mask's [L, L] block is over half of
VBUF (BERT-base's expanded padding mask at 512 tokens on the default hardware), each head is
scored tile by tile, the tiles streaming their mask rows. Two chained INT8 self-attentions
with per-query masks (the second causal) under insert-spatten, on a shrunken VBUF (a test TOML)
and on the default one, where the whole block fits: the per-tile program's scores (as the
second layer's SPATTEN_TOPK reads them), masks and outputs equal the whole program's and the
reference interpreter's bit for bit, the tiles' work adds up to the whole head's, and the LSB
re-fetches are charged per tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xdsl.parser import Parser

from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.dialects.spatten import SelectOp
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.ir_queries import main_function
from esact_cc.passes.insert_spatten import InsertSpattenPass
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime import isa_table
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.spatten_kernels import LSB_BITS
from esact_cc.weight_store import WeightStore

L, WIDTH, HEADS = 24, 16, 2
T, M = f"tensor<1x{L}x{WIDTH}xf32>", f"tensor<1x1x{L}x{L}xf32>"
SCALES = "q_scale(0.03) k_scale(0.03) v_scale(0.03) p_scale(0.00787401572)"
TWO_LAYERS = f"""builtin.module {{
  func.func @main(%q: {T} {{onnx.name = "q"}}, %k: {T} {{onnx.name = "k"}}, %v: {T} {{onnx.name = "v"}}, %m: {M} {{onnx.name = "m"}}) -> ({T} {{onnx.name = "y"}}, {T} {{onnx.name = "z"}}) {{
    %a = transformer.attention %q, %k, %v mask %m heads({HEADS}) scale(3.5e-01) {SCALES} {{layer = 0 : i64, role = "attention"}} : ({T}, {T}, {T}, {M}) -> {T}
    %b = transformer.attention %a, %a, %a mask %m heads({HEADS}) scale(3.5e-01) causal {SCALES} {{layer = 1 : i64, role = "attention"}} : ({T}, {T}, {T}, {M}) -> {T}
    func.return %a, %b : {T}, {T}
  }}
}}"""


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    values = {n: rng.standard_normal((1, L, WIDTH)).astype(np.float32) for n in "qkv"}
    values["m"] = np.where(rng.random((1, 1, L, L)) < 0.25, -10000.0, 0.0).astype(np.float32)
    return values


def hardware(tmp_path: Path, vbuf_bytes: int | None) -> str | None:
    if vbuf_bytes is None:
        return None
    path = tmp_path / f"vbuf_{vbuf_bytes}.toml"
    path.write_text(f'name = "small-vbuf-{vbuf_bytes}"\n[sram]\nvector_buffer = {vbuf_bytes}\n')
    return str(path)


def pruned_module():
    module = Parser(make_context(), TWO_LAYERS).parse_module()
    InsertSpattenPass(token_keep=0.5, requant_threshold=0.3).apply(make_context(), module)
    return module


def compile_program(hw: str | None):
    module, store = pruned_module(), WeightStore({})
    for step in (LowerToEsactPass(store=store, hw=hw), SchedulePass()):
        step.apply(make_context(), module)
    return program_from_module(module, store)


def run_recording_topk(program, hw: str | None, monkeypatch):
    """Run the program; the scores every SPATTEN_TOPK reads (none for the first layer)."""
    read: list[np.ndarray] = []
    kernel = isa_table.INSTRUCTION_KERNELS["spatten_topk"]

    def recording(machine, fields):
        if fields["has_prev"]:
            read.append(machine.vector("scores_addr").copy())
        kernel(machine, fields)

    monkeypatch.setitem(isa_table._KERNELS, "spatten_topk", recording)
    result = execute(program, inputs(), load_config(hw))
    monkeypatch.setitem(isa_table._KERNELS, "spatten_topk", kernel)
    return result, read


def reference():
    """Outputs and each spatten.select's (tokens, heads, scores, head scores)."""
    selected = []

    class Recorder(Interpreter):
        def run_op(self, op, args):
            out = super().run_op(op, args)
            if isinstance(op, SelectOp):
                selected.append(tuple(np.asarray(o) for o in out))
            return out

    module = pruned_module()
    outputs = Recorder(WeightStore({})).run_function(main_function(module), inputs())
    return outputs, selected


def score_rows(program) -> list[tuple[int, int]]:
    return [(i["first_row"], i["rows"]) for i in program.instructions
            if i.opcode_name == "spatten_score"]


def score_work(program, execution) -> dict[str, int]:
    """SPATTEN_SCORE's work counters but DRAM summed over the program."""
    totals = dict.fromkeys(("shift_adds", "sfu_elements", "rows_total", "rows_executed"), 0)
    for instruction, work in zip(program.instructions, execution.work):
        if instruction.opcode_name == "spatten_score":
            for key in totals:
                totals[key] += getattr(work, key)
    return totals


def lsb_fetches(program, execution) -> list[tuple[int, int]]:
    """(Q rows, K rows) whose LSBs each SPATTEN_SCORE re-fetches, from its DRAM bytes."""
    d = WIDTH // HEADS
    return [(w.rows_executed, w.dram_read_bytes * 8 // (d * LSB_BITS) - w.rows_executed)
            for i, w in zip(program.instructions, execution.work)
            if i.opcode_name == "spatten_score"]


def test_scoring_per_query_tile_equals_the_whole_and_the_interpreter(tmp_path, monkeypatch):
    small = hardware(tmp_path, 4096)  # 1024 FP32 elements: half is under the 24 x 24 block
    whole, tiled = compile_program(None), compile_program(small)
    assert set(score_rows(whole)) == {(0, L)}
    tiles = score_rows(tiled)
    assert len(tiles) == 2 * HEADS * 2  # two layers, each head in two query tiles
    assert tiles[:2] == [(0, 12), (12, 12)]
    streamed = [i for i in tiled.instructions if i.opcode_name == "spatten_score"]
    assert all(i["has_add_mask"] and i["add_mask_rows"] for i in streamed)

    expected, selected = reference()
    results = {}
    for name, program, hw in (("whole", whole, None), ("tiled", tiled, small)):
        results[name], read = run_recording_topk(program, hw, monkeypatch)
        # layer 1's TOPK reads the scores layer 0 accumulated, pruned nothing yet
        np.testing.assert_array_equal(read[0], selected[0][2][0])
        for out in ("y", "z"):
            np.testing.assert_array_equal(results[name].outputs[out], expected[out])
    assert 0 < selected[1][0].sum() < L  # the cascade pruned tokens
    # the scoring work is charged per tile: the tiles of a head add up to the whole head
    work = {name: score_work(program, results[name])
            for name, program in (("whole", whole), ("tiled", tiled))}
    assert work["tiled"] == work["whole"] and work["whole"]["rows_executed"] > 0
    # LSB re-fetches: each refetched row's Q LSBs, and the kept K rows' once per instruction
    # (per tile) with any refetched row
    kept = [L, int(selected[1][0].sum())]  # tokens alive in layers 0 and 1
    for name, program in (("whole", whole), ("tiled", tiled)):
        fetches = lsb_fetches(program, results[name])
        per_layer = len(fetches) // 2
        assert [k for _, k in fetches] == [kept[n // per_layer] if q else 0
                                           for n, (q, _) in enumerate(fetches)]
    assert sum(q for q, _ in lsb_fetches(tiled, results["tiled"])) == \
        sum(q for q, _ in lsb_fetches(whole, results["whole"])) > 0

def test_a_vbuf_without_room_for_one_mask_row_is_one_error(tmp_path):
    with pytest.raises(CompileError, match="SPATTEN_SCORE: one row of the per-query additive "
                                           "mask"):
        compile_program(hardware(tmp_path, 64))


def test_an_abuf_without_room_for_one_heads_codes_is_one_error(tmp_path):
    path = tmp_path / "small_abuf.toml"
    path.write_text('name = "small-abuf"\n[sram]\nactivation_buffer = 1024\n')
    with pytest.raises(CompileError, match=r"SPATTEN_SCORE: one head's Q, K and V codes \(24 "
                                           r"rows x 24\) are over half of ABUF \(512 elements\)"):
        compile_program(str(path))
