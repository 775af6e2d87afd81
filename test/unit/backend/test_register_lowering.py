"""`lowering_state.register_lowering`: a module outside the lowering adds the instruction
selection of its own op; lower-to-esact uses it like a built-in rule (the program runs on the
functional model), and a second rule for one op type is refused."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.dialects import transformer
from esact_cc.passes.lower_to_esact import LowerToEsactPass, rowwise
from esact_cc.passes.lowering_state import Lowering, register_lowering, registered_lowerings
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from xdsl.dialects import func
from xdsl.irdl import IRDLOperation, irdl_op_definition, operand_def, result_def
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc.api import parse_ir
from esact_cc.backend.emit_esb import program_from_module
from esact_cc.dialect_registry import make_context
from esact_cc.weight_store import WeightStore


@irdl_op_definition
class DoubleOp(IRDLOperation):
    """A test op: y = x + x (FP32)."""

    name = "test.double"
    x = operand_def()
    result = result_def()

    def __init__(self, x, result_type):
        super().__init__(operands=[x], result_types=[result_type])


def lower_double(lw: Lowering, op: DoubleOp) -> None:
    def body(addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("add", "sfu", dst_addr=addrs[0], a_addr=addrs[0], b_addr=addrs[1], rows=rows,
                cols=cols)

    x = lw.f32_tensor(op.x, "x")
    rowwise(lw, [x, x], op.result, body)


register_lowering(DoubleOp, lower_double)  # type: ignore[arg-type]

IR = """
func.func @main(%x: tensor<3x8xf32> {onnx.name = "x"}) -> (tensor<3x8xf32> {onnx.name = "y"}) {
  func.return %x : tensor<3x8xf32>
}
"""


def test_a_registered_rule_lowers_its_op_and_the_program_runs() -> None:
    module = parse_ir(IR)
    main = next(op for op in module.walk() if isinstance(op, func.FuncOp))
    ret = main.body.block.last_op
    x = main.body.block.args[0]
    double = DoubleOp(x, x.type)
    Rewriter.insert_op(double, InsertPoint.before(ret))
    ret.operands = [double.result]
    store = WeightStore({})
    LowerToEsactPass(store=store).apply(make_context(), module)
    SchedulePass().apply(make_context(), module)
    names = [op.name for op in module.body.block.ops]
    assert "esact.add" in names
    data = np.arange(24, dtype=np.float32).reshape(3, 8) - 5
    outputs = run_program(program_from_module(module, store), {"x": data}, load_config()).outputs
    np.testing.assert_array_equal(outputs["y"], data + data)


def test_one_rule_per_op_type() -> None:
    assert registered_lowerings()[DoubleOp] is lower_double
    with pytest.raises(ValueError, match="DoubleOp is already registered"):
        register_lowering(DoubleOp, lower_double)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LinearOp is already registered"):
        register_lowering(transformer.LinearOp, lower_double)  # type: ignore[arg-type]
