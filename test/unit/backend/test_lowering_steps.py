"""The lowering's named steps (esact-select-instructions -> esact-allocate-buffers ->
esact-order -> schedule) on an SPLS layer: each step's IR is printable and parses back, the
steps run one by one (also from printed IR) give the program lower-to-esact gives, selection
leaves only virtual buffers, allocation only addresses, ordering no directives; and a step
run out of turn or with another hardware config is a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects import esact
from esact_cc.dialects.lowering import (
    GROUP_ATTR,
    HOIST_ATTR,
    VBUF_ATTR,
    LabelOp,
    PlaceOp,
    ReleaseOp,
    ReserveOp,
)
from esact_cc.passes.allocate_buffers import AllocateBuffersPass
from esact_cc.passes.insert_spls import InsertSplsPass
from esact_cc.passes.lower_to_esact import LowerToEsactPass, SelectInstructionsPass
from esact_cc.passes.order_instructions import OrderPass
from esact_cc.passes.quantize import QuantizePass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config
from esact_cc.tuning.calibrate_pass import CalibratePass

from esact_cc.api import parse_ir
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.interpreter.reference_interpreter import run_module
from spls_test_layer import layer_fp32, layer_inputs


def sparse_layer():
    module, store = layer_fp32(masked=True, causal=False)
    for step in (CalibratePass(store=store), QuantizePass(store=store), InsertSplsPass(store=store)):
        step.apply(make_context(), module)
    return module, store


def instructions(module) -> list[esact.InstructionOp]:
    return [op for op in module.body.block.ops if isinstance(op, esact.InstructionOp)]


def test_steps_one_by_one_from_printed_ir_equal_lower_to_esact() -> None:
    whole, whole_store = sparse_layer()  # its own store: compiler constants get unique names
    LowerToEsactPass(store=whole_store).apply(make_context(), whole)
    SchedulePass().apply(make_context(), whole)
    module, store = sparse_layer()
    reference = module.clone()
    text = str(module)
    for step in (SelectInstructionsPass(store=store), AllocateBuffersPass(), OrderPass(),
                 SchedulePass()):
        module = parse_ir(text)  # each step reads the previous step's printed IR
        step.apply(make_context(), module)
        module.verify()
        text = str(module)
    assert text == str(whole)
    x = layer_inputs(2)
    got = execute(program_from_module(module, store), x, load_config()).outputs["y"]
    np.testing.assert_array_equal(got, run_module(reference, x, store)["y"])


def test_each_step_leaves_what_the_next_one_takes() -> None:
    module, store = sparse_layer()
    SelectInstructionsPass(store=store).apply(make_context(), module)
    ops = list(module.body.block.ops)
    reserved = [op for op in ops if isinstance(op, ReserveOp)]
    released = {op.id.value.data for op in ops if isinstance(op, ReleaseOp)}
    pinned = {op.id.value.data for op in reserved if op.address is not None}
    # Every allocated buffer is released once; pinned ones are outside the allocator.
    assert released == {op.id.value.data for op in reserved} - pinned
    assert pinned  # the prediction's ACC scratch slots
    selected = instructions(module)
    assert sum(VBUF_ATTR in op.attributes for op in selected) > len(selected) // 2
    assert any(HOIST_ATTR in op.attributes for op in selected)
    policies = [op.policy.data for op in ops if isinstance(op, PlaceOp)]
    assert policies == ["aside", "interleave", "sink", "aside", "prepare"]
    assert sum(isinstance(op, LabelOp) for op in ops) == 2
    # Selection order: the K / V linears (group 1) come before the projection's BPUs.
    first_bpu = next(i for i, op in enumerate(selected) if op.name == "esact.bpu")
    grouped = [i for i, op in enumerate(selected) if op.attributes.get(GROUP_ATTR) is not None]
    assert grouped and min(grouped) < first_bpu

    AllocateBuffersPass().apply(make_context(), module)
    ops = list(module.body.block.ops)
    assert not any(isinstance(op, (ReserveOp, ReleaseOp)) for op in ops)
    assert not any(VBUF_ATTR in op.attributes for op in instructions(module))
    assert any(isinstance(op, PlaceOp) for op in ops)

    OrderPass().apply(make_context(), module)
    ordered = instructions(module)
    assert not any(isinstance(op, (LabelOp, PlaceOp)) for op in module.body.block.ops)
    assert not any(name in op.attributes for op in ordered for name in (HOIST_ATTR, GROUP_ATTR))
    assert sorted(map(id, ordered)) == sorted(map(id, selected)) and ordered != selected
    # Selected before the projection's BPU, the K GEMM stays in front of it and the V GEMM,
    # expected to end after the projection, is sunk behind the chain's SIMILARITY.
    def position(program, name, component):
        return next(i for i, op in enumerate(program)
                    if op.name == name and op.component.data == component)

    for program in (selected, ordered):
        assert position(program, "esact.gemm", "k") < position(program, "esact.bpu", "predict")
    assert position(selected, "esact.gemm", "v") < position(selected, "esact.bpu", "predict")
    assert position(ordered, "esact.gemm", "v") > position(ordered, "esact.similarity", "predict")


@pytest.mark.parametrize("step", [AllocateBuffersPass(), OrderPass()])
def test_a_step_before_selection_is_one_line(step) -> None:
    module, _ = sparse_layer()
    with pytest.raises(CompileError, match="not a selected esact program") as info:
        step.apply(make_context(), module)
    assert "\n" not in str(info.value)


def test_ordering_before_allocation_is_one_line() -> None:
    module, store = sparse_layer()
    SelectInstructionsPass(store=store).apply(make_context(), module)
    with pytest.raises(CompileError, match="run esact-allocate-buffers first"):
        OrderPass().apply(make_context(), module)


def test_another_hardware_config_than_selection_is_one_line(tmp_path: Path) -> None:
    module, store = sparse_layer()
    SelectInstructionsPass(store=store).apply(make_context(), module)
    other = tmp_path / "other.toml"
    other.write_text("[sram]\nactivation_buffer = 65536\n")
    with pytest.raises(CompileError, match="selected for another hardware config") as info:
        AllocateBuffersPass(hw=str(other)).apply(make_context(), module)
    assert "\n" not in str(info.value)
