"""Constant masks from the weight store (what a test-defined sparsity scheme inserts) through
the one masked linear / attention lowering: IR -> lower-to-esact -> .esb -> functional model,
bit-identical to the INT8 reference interpreter, and the timing model's executed MACs are the
dense MACs minus exactly the work the masks drop."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.insert_spls import find_layers
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.quantize import QuantizePass
from esact_cc.tuning.calibrate_pass import CalibratePass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType, i8, i32
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc.dialect_registry import make_context
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.interpreter.reference_interpreter import run_module
from spls_test_layer import D, L, layer_fp32, layer_inputs

HEADS = 2
EVERY_SECOND_ROW = np.array([-1 if i % 2 == 0 else i - 1 for i in range(L)], np.int32)
"""Even rows computed, odd row i takes row i - 1's outputs."""


def _constant(anchor, store, name: str, array: np.ndarray, element) -> object:
    handle = WeightOp(store.add(name, array), TensorType(element, list(array.shape)))
    Rewriter.insert_op(handle, InsertPoint.before(anchor))
    return handle.result


def _replace(old, new) -> None:
    new.location = old.location
    Rewriter.replace_op(old, new)


def masked_layer(reuse: np.ndarray | None, spa: np.ndarray | None, key_masked: bool):
    """The quantized test layer with constant masks: `reuse` on Q, O, FFN up / down and the
    attention, `spa` [H, L, L] on the attention, and (key_masked) K and V restricted to the
    keys some computed row's SPA keeps."""
    module, store = layer_fp32(masked=False, causal=False)
    for step in (CalibratePass(store=store), QuantizePass(store=store)):
        step.apply(make_context(), module)
    function = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    (layer,) = find_layers(function)
    anchor = layer.q
    rows = None if reuse is None else _constant(anchor, store, "mask.rows", reuse, i32)
    spa_value = None if spa is None else _constant(anchor, store, "mask.spa",
                                                   spa.astype(np.int8), i8)
    key_value = None
    if key_masked:
        computed = reuse < 0 if reuse is not None else np.ones(L, bool)
        keys = spa[:, computed, :].any(axis=1).astype(np.int8)  # [H, L]
        key_value = _constant(anchor, store, "mask.keys", keys, i8)
    if rows is not None:
        for linear in (layer.q, layer.out, layer.ffn_up, layer.ffn_down):
            _replace(linear, linear.with_operands_of(rows=rows))
    if key_value is not None:
        for linear in (layer.k, layer.v):
            _replace(linear, linear.with_operands_of(keys=key_value, heads=HEADS))
    _replace(layer.attention, layer.attention.with_operands_of(rows=rows, spa=spa_value))
    module.verify()
    return module, store


def compile_and_run(module, store, inputs):
    program = module.clone()
    for p in (LowerToEsactPass(store=store), SchedulePass()):
        p.apply(make_context(), program)
    return run_program(program_from_module(program, store), inputs, load_config())


def random_spa(seed: int, keep: float = 0.5) -> np.ndarray:
    kept = np.random.default_rng(seed).random((HEADS, L, L)) < keep
    return kept | np.eye(L, dtype=bool)[None]  # every row keeps its own key


def skipped_macs(reuse: np.ndarray | None, spa: np.ndarray | None, key_masked: bool) -> int:
    """Dense minus executed MAC-array work the masks imply, counted by hand."""
    from spls_test_layer import F

    computed = np.ones(L, bool) if reuse is None else reuse < 0
    reused = L - int(computed.sum())
    head = D // HEADS
    skipped = reused * (D * D + D * D + D * F + F * D)  # Q, O, FFN up, FFN down
    kept = np.ones((HEADS, L, L), bool) if spa is None else spa.astype(bool)
    dropped = int((~kept[:, computed, :]).sum())  # (head, computed row, key) pairs skipped
    skipped += 2 * (reused * L * D + dropped * head)  # QK and PV
    if key_masked:
        unkept_keys = int((~kept[:, computed, :].any(axis=1)).sum())  # (head, key) rows
        skipped += 2 * unkept_keys * D * head  # K and V
    return skipped


@pytest.mark.parametrize("reuse, spa_seed, key_masked", [
    (EVERY_SECOND_ROW, None, False),
    (EVERY_SECOND_ROW, 3, False),
    (None, 4, False),
    (EVERY_SECOND_ROW, 5, True),
])
def test_constant_masks_run_bit_exact_with_exact_mac_accounting(reuse, spa_seed, key_masked):
    spa = None if spa_seed is None else random_spa(spa_seed, keep=0.3)
    inputs = layer_inputs()
    module, store = masked_layer(reuse, spa, key_masked)
    result = compile_and_run(module, store, inputs)
    np.testing.assert_array_equal(result.outputs["y"], run_module(module, inputs, store)["y"])

    dense_module, dense_store = masked_layer(None, None, False)
    dense = compile_and_run(dense_module, dense_store, inputs).report["total"]
    total = result.report["total"]
    assert total["macs_dense"] == dense["macs_dense"]
    skipped = skipped_macs(reuse, spa, key_masked)
    assert skipped > 0
    assert total["macs_executed"] == dense["macs_executed"] - skipped


def test_a_reuse_map_pointing_at_a_reused_row_is_a_compile_error():
    chained = EVERY_SECOND_ROW.copy()
    chained[3] = 1  # row 1 is itself reused
    module, store = masked_layer(chained, None, False)
    with pytest.raises(CompileError, match="a reused row takes a row that is reused too") as info:
        compile_and_run(module, store, layer_inputs())
    assert "\n" not in str(info.value)
