"""Questions about IR that every layer asks: a module's `main` function, the ONNX names of its
inputs and outputs, and how an error names an op. Shared by the passes, the interpreter and the
driver, so the passes need not import the interpreter.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, NameLoc, StringAttr
from xdsl.ir import Operation

from esact_cc.runtime.errors import CompileError

NAME_ATTR = "onnx.name"
"""Argument/result attribute carrying the ONNX input/output name (set by the frontend)."""

def op_label(op: Operation) -> str:
    """`onnx.MatMul at "/encoder/.../MatMul"`: how errors name an op."""
    loc = op.location
    if isinstance(loc, NameLoc):
        return f'{op.name} at "{loc.desc.data}"'
    return op.name


def io_names(function: func.FuncOp, results: bool) -> list[str]:
    """ONNX names of a function's arguments or results (`onnx.name`), else arg0/output0..."""
    attrs = function.res_attrs if results else function.arg_attrs
    count = len(function.function_type.outputs.data if results else function.function_type.inputs.data)
    names: list[str] = []
    for index in range(count):
        name = None
        if attrs is not None and index < len(attrs.data):
            attr = attrs.data[index].data.get(NAME_ATTR)
            if isinstance(attr, StringAttr):
                name = attr.data
        names.append(name or (f"output{index}" if results else f"arg{index}"))
    return names


def main_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise CompileError("module has no func.func @main")
