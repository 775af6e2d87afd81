"""The sparse lowering on one encoder layer written in IR: padding masks, causal attention and
forced reuse, compiled (quantize, insert-spls, lower-to-esact, schedule) and run on the
functional model, against the INT8 SPLS reference interpreter bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.passes.insert_spls import InsertSplsPass
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.quantize import QuantizePass
from esact_cc.tuning.calibrate_pass import CalibratePass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config

from esact_cc.api import parse_ir
from esact_cc.dialect_registry import make_context
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.interpreter.reference_interpreter import run_module
from spls_test_layer import D, L, layer_fp32, layer_inputs


def layer(masked: bool, causal: bool, seed: int = 0):
    module, store = layer_fp32(masked, causal, seed)
    for step in (CalibratePass(store=store), QuantizePass(store=store)):
        step.apply(make_context(), module)
    return module, store


def compile_both(module, store, chunk_rows=None, hw=None, **options):
    reference = module.clone()
    InsertSplsPass(store=store, **options).apply(make_context(), reference)
    program = reference.clone()
    for p in (LowerToEsactPass(spls_chunk_rows=chunk_rows, store=store, hw=hw), SchedulePass()):
        p.apply(make_context(), program)
    return reference, program_from_module(program, store)


CASES = {
    "padding-cosprob": (True, False, 2, {}),
    "padding-topk-overlap": (True, False, 1, {"attention": "topk", "similarity": "overlap",
                                              "k_ratio": 0.5}),
    "padding-reuse-all": (True, False, 2, {"threshold": -1.0, "window": 1, "k_ratio": 0.5}),
    "causal": (False, True, 0, {"k_ratio": 0.5, "threshold": 0.5}),
    "first-reference": (True, False, 0, {"k_ratio": 0.5, "threshold": 0.0, "first_reference": 2}),
    "causal-topk": (False, True, 0, {"attention": "topk", "k_ratio": 0.5, "threshold": 0.5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spls_layer_binary_equals_reference(case: str) -> None:
    masked, causal, padded, options = CASES[case]
    module, store = layer(masked, causal)
    reference, program = compile_both(module, store, **options)
    x = layer_inputs(padded)  # an unmasked layer leaves its mask input unused
    expected = run_module(reference, x, store)["y"]
    got = execute(program, x, load_config()).outputs["y"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("padded", [0, 2])
def test_per_query_mask(padded: int) -> None:
    """A [1, 1, L, L] mask (BERT's expanded padding mask): exact while every row keeps >= k
    unmasked keys (k = ceil(0.5 * 6) = 3 <= 4 real keys here)."""
    module, store = layer(masked=True, causal=False)
    module = parse_ir(str(module).replace("tensor<1x1x1x6xf32>", "tensor<1x1x6x6xf32>"))
    reference, program = compile_both(module, store, k_ratio=0.5, threshold=0.5)
    x = layer_inputs(padded)
    x["m"] = np.broadcast_to(x["m"], (1, 1, L, L)).copy()
    expected = run_module(reference, x, store)["y"]
    np.testing.assert_array_equal(execute(program, x, load_config()).outputs["y"], expected)


@pytest.mark.parametrize("chunk", [1, 4])
@pytest.mark.parametrize("case", sorted(CASES))
def test_progressive_prediction_equals_reference(case: str, chunk: int, tmp_path) -> None:
    """Row-chunked prediction (one PAM/TOPK/SIMILARITY chunk of `chunk` rows, the masked Q
    GEMMs over whole chunks grouped while they fit a 2-row MAC array): the same outputs as
    the reference, bit for bit."""
    masked, causal, padded, options = CASES[case]
    module, store = layer(masked, causal)
    hw = tmp_path / "mac2rows.toml"
    hw.write_text('name = "mac-2-rows"\n[mac_array]\nrows = 2\n')
    reference, program = compile_both(module, store, chunk, str(hw), **options)
    sims = [i for i in program.instructions if i.opcode_name == "similarity"]
    assert [(i["first_row"], i["row_count"]) for i in sims] == \
        [(r, min(chunk, L - r)) for r in range(0, L, chunk)]
    q_rows = [i["m"] for i in program.instructions if i.opcode_name == "gemm" and i["m"] < L]
    assert q_rows == ([2, 2, 2] if chunk == 1 else [4, 2])  # one column tile
    x = layer_inputs(padded)
    expected = run_module(reference, x, store)["y"]
    got = execute(program, x, load_config(hw)).outputs["y"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("chunk", [2, 5])
def test_progressive_prediction_per_query_mask(chunk: int) -> None:
    """The per-query mask's rows are added chunk by chunk (BERT's expanded padding mask)."""
    module, store = layer(masked=True, causal=False)
    module = parse_ir(str(module).replace("tensor<1x1x1x6xf32>", "tensor<1x1x6x6xf32>"))
    reference, program = compile_both(module, store, chunk, k_ratio=0.5, threshold=0.5)
    assert sum(i.opcode_name == "similarity" for i in program.instructions) == -(-L // chunk)
    x = layer_inputs(2)
    x["m"] = np.broadcast_to(x["m"], (1, 1, L, L)).copy()
    expected = run_module(reference, x, store)["y"]
    np.testing.assert_array_equal(execute(program, x, load_config()).outputs["y"], expected)


@pytest.mark.parametrize("case", ["padding-cosprob", "padding-topk-overlap"])
def test_no_room_beside_the_prediction_falls_back_exactly(case: str, monkeypatch) -> None:
    """When the K / V / Q tiles do not fit beside the prediction's regions (simulated: their
    lowering fails after emitting and allocating), the lowering state is restored and they
    are lowered after the chain instead: same outputs as the reference."""
    from esact_cc.passes.lowering_state import Lowering
    from esact_cc.runtime.errors import CompileError

    real_now, real_aside = Lowering.lower_now, Lowering.lower_aside
    aside = {"active": False, "failed": 0}

    def failing_now(lw, op):
        real_now(lw, op)
        if aside["active"]:
            aside["failed"] += 1
            raise CompileError("no room (simulated)")

    def tracked_aside(lw, ops, masks):
        aside["active"] = True
        try:
            return real_aside(lw, ops, masks)
        finally:
            aside["active"] = False

    monkeypatch.setattr(Lowering, "lower_now", failing_now)
    monkeypatch.setattr(Lowering, "lower_aside", tracked_aside)
    masked, causal, padded, options = CASES[case]
    module, store = layer(masked, causal)
    reference, program = compile_both(module, store, 2, **options)
    assert aside["failed"] >= 1
    monkeypatch.setattr(Lowering, "lower_now", real_now)
    _, normal = compile_both(*layer(masked, causal), 2, **options)
    count = lambda p: sorted(i.opcode_name for i in p.instructions)  # noqa: E731
    assert count(program) == count(normal)  # nothing of the failed attempt is left
    x = layer_inputs(padded)
    expected = run_module(reference, x, store)["y"]
    np.testing.assert_array_equal(execute(program, x, load_config()).outputs["y"], expected)


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize("case", ["padding-cosprob", "causal-topk", "first-reference"])
def test_progressive_prediction_batch_of_two(case: str, chunk: int | None) -> None:
    """Two sequences: one chain of chunks per batch element, the Q GEMMs per element and chunk."""
    masked, causal, padded, options = CASES[case]
    module, store = layer(masked, causal)
    module = parse_ir(str(module).replace("tensor<1x6x8xf32>", "tensor<2x6x8xf32>")
                      .replace("tensor<1x6x16xf32>", "tensor<2x6x16xf32>"))
    reference, program = compile_both(module, store, chunk, **options)
    sims = [(i["map_addr"], i["first_row"]) for i in program.instructions
            if i.opcode_name == "similarity"]
    per_element = -(-L // min(chunk or L, L))
    assert len(sims) == 2 * per_element and len({m for m, _ in sims}) == 2
    x = layer_inputs(padded)
    x["h"] = np.random.default_rng(5).standard_normal((2, L, D)).astype(np.float32)
    expected = run_module(reference, x, store)["y"]
    got = execute(program, x, load_config()).outputs["y"]
    assert got.shape == (2, L, D)
    np.testing.assert_array_equal(got, expected)
