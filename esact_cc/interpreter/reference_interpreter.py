"""The reference interpreter: runs `func.func @main` of a module on numpy inputs.

In the spirit of torch.fx's Interpreter: `Interpreter.run_op` dispatches each op by name to an
implementation registered with `@register("dialect.op")`; a subclass can override `run_op`
(e.g. to record intermediate values). Implementations live in one module per dialect
(`IMPLEMENTATION_MODULES`), imported lazily the first time an interpreter is built, so a
dialect's semantics are added by appending a module name.

An implementation is `fn(interpreter, op, args) -> outputs` where `args` are the operand values
(numpy arrays, in operand order) and `outputs` one array per result (a single array is accepted
for one-result ops). `interpreter.store` is the module's weight store; `interpreter.run_block`
runs a nested region (for ops with bodies, e.g. host regions). Every result is checked against
its IR type: the element type is enforced (cast) and a shape mismatch is an error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, Operation, SSAValue
from xdsl.irdl import AttrSizedOperandSegments, OptOperandDef, VarOperandDef
from xdsl.traits import IsTerminator

from esact_cc.ir_queries import io_names, main_function, op_label
from esact_cc.runtime.errors import CompileError
from esact_cc.tensor_types import numpy_dtype_of
from esact_cc.weight_store import WeightStore

Array = np.ndarray
OpImpl = Callable[["Interpreter", Operation, list[Array]], "Sequence[Array] | Array"]

IMPLEMENTATION_MODULES: list[str] = [
    "esact_cc.interpreter.interpret_onnx_ops",
    "esact_cc.interpreter.interpret_transformer_ops",
    "esact_cc.interpreter.interpret_spls_ops",
]
"""Modules registering op implementations; append one to add a dialect's semantics (a sparsity
scheme's come from its registration: `SparsityScheme.interpreter`)."""

_IMPLS: dict[str, OpImpl] = {}
_loaded = False


def register(op_name: str) -> Callable[[OpImpl], OpImpl]:
    """Decorator: `fn` computes ops named `op_name` (e.g. "onnx.MatMul")."""

    def wrap(fn: OpImpl) -> OpImpl:
        _IMPLS[op_name] = fn
        return fn

    return wrap


def load_implementations() -> None:
    """Import every implementation module (once), and every sparsity scheme's (a scheme
    registered later is picked up by the next interpreter)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module_name in IMPLEMENTATION_MODULES:
            importlib.import_module(module_name)
    from esact_cc.sparsity.registry import import_scheme_modules

    import_scheme_modules("interpreter")


def registered_ops() -> list[str]:
    load_implementations()
    return sorted(_IMPLS)


def operands_by_name(op: Operation, args: Sequence[Array]) -> dict[str, Array]:
    """Operand values by field name (absent optional operands are left out)."""
    return dict(zip(_present_operands(op), args, strict=True))


def _present_operands(op: Operation) -> list[str]:
    """The names of the operand fields `getattr(op, name) is not None` holds for, read from
    the segment sizes (or the operand count) once: xdsl's accessors unpack the sizes again
    for every field (5% of calibrating BERT-base)."""
    definition = type(op).get_irdl_definition()
    fields = definition.operands
    sizes = None
    for option in definition.options:
        if isinstance(option, AttrSizedOperandSegments):
            sizes = list(option.container(op)[option.attribute_name].get_values())  # type: ignore[attr-defined]
    variadic = [index for index, (_, field) in enumerate(fields) if isinstance(field, VarOperandDef)]
    if sizes is None and len(variadic) == 1:  # one variadic field takes what the others leave
        sizes = [1] * len(fields)
        sizes[variadic[0]] = len(op.operands) - len(fields) + 1
    if sizes is None:
        if variadic:  # several variadic fields sized alike: xdsl's accessors know the rule
            return [name for name, _ in fields if getattr(op, name) is not None]
        return [name for name, _ in fields]
    return [name for (name, field), size in zip(fields, sizes, strict=True)
            if size or not isinstance(field, OptOperandDef)]


class Interpreter:
    """Runs functions of a module op by op; override `run_op` to observe or replace ops."""

    def __init__(self, store: WeightStore):
        load_implementations()
        self.store = store
        self.env: dict[SSAValue, Array] = {}
        self.facts: dict[object, object] = {}
        """Facts about the module an implementation computes once per interpreter, the module
        being fixed while it runs (interpret_quantized_ops.in_quantized_function)."""

    def run_op(self, op: Operation, args: list[Array]) -> list[Array]:
        impl = _IMPLS.get(op.name)
        if impl is None:
            raise CompileError(f"the reference interpreter has no semantics for {op_label(op)}")
        try:
            outputs = impl(self, op, args)
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001 - any kernel failure: a one-line error naming the op
            raise CompileError(f"{op_label(op)}: {type(e).__name__}: {' '.join(str(e).split())}") from None
        if isinstance(outputs, np.ndarray):
            outputs = [outputs]
        return [self._check_result(op, i, out) for i, out in enumerate(outputs)]

    def _check_result(self, op: Operation, index: int, value: Array) -> Array:
        value = np.asarray(value)
        if index >= len(op.results):
            raise CompileError(f"{op_label(op)}: computed {index + 1}+ results, IR has {len(op.results)}")
        result_type = op.results[index].type
        if isinstance(result_type, TensorType):
            expected = tuple(result_type.get_shape())
            if value.shape != expected:
                raise CompileError(
                    f"{op_label(op)}: result {index} has shape {value.shape}, IR type says {expected}"
                )
            dtype = numpy_dtype_of(result_type)
            if value.dtype != dtype:
                value = value.astype(dtype)
        return value

    def run_block(self, block: Block, args: Sequence[Array]) -> list[Array]:
        """Run a block's ops; return the values its terminator passes on (see run_lanes)."""
        return self.run_lanes(block, [args], [self.env])[0]

    def run_lanes(self, block: Block, arg_sets: Sequence[Sequence[Array]],
                  envs: Sequence[dict[SSAValue, Array]], last_op: int | None = None) -> list[list[Array]]:
        """Run a block once per lane (one set of argument values and one environment each),
        op by op across the lanes, through `run_op_lanes`; return each lane's terminator
        operands. `last_op`: stop after the op of that index and return no values (ops after
        it are work nobody reads). A value of the block is dropped from the environments after
        the last op that reads it (itself or in its regions): only live activations stay in
        memory (calibrating BERT-base at 512 tokens held every one of a sample's, 400 MB)."""
        for block_arg in block.args:
            for env, args in zip(envs, arg_sets, strict=True):
                env[block_arg] = args[block_arg.index]
            self.defined(block_arg, [env[block_arg] for env in envs])
        dead_after = dead_values_after(block)
        for index, op in enumerate(block.ops):
            if last_op is not None and index > last_op:
                return [[] for _ in envs]
            lane_args = [[env[operand] for operand in op.operands] for env in envs]
            if op.has_trait(IsTerminator):
                return lane_args
            outputs = self.run_op_lanes(op, lane_args, envs)
            for result in op.results:
                values = [lane[result.index] for lane in outputs]
                for env, value in zip(envs, values):
                    env[result] = value
                self.defined(result, values)
            for env in envs:
                for value in dead_after.get(index, ()):
                    del env[value]
        return [[] for _ in envs]

    def run_op_lanes(self, op: Operation, lane_args: list[list[Array]],
                     envs: Sequence[dict[SSAValue, Array]]) -> list[list[Array]]:
        """`run_op` once per lane, the lane's environment current (a nested region runs in
        it); a subclass may compute all lanes at once."""
        current = self.env
        outputs = []
        for env, args in zip(envs, lane_args):
            self.env = env
            outputs.append(self.run_op(op, args))
            if len(outputs[-1]) != len(op.results):
                raise CompileError(f"{op_label(op)}: computed {len(outputs[-1])} results, "
                                   f"IR has {len(op.results)}")
        self.env = current
        return outputs

    def defined(self, value: SSAValue, lane_values: list[Array]) -> None:
        """Called with each lane's value of a block argument or op result when it is set
        (a hook for subclasses that observe values)."""

    def run_function(self, function: func.FuncOp, inputs: Mapping[str, Array]) -> dict[str, Array]:
        outputs = self.run_block(function.body.block, function_arguments(function, inputs))
        return dict(zip(io_names(function, results=True), outputs, strict=True))


def function_arguments(function: func.FuncOp, inputs: Mapping[str, Array]) -> list[Array]:
    """The values of `function`'s arguments from named inputs, checked against its types
    (a dtype that casts same-kind is converted)."""
    arg_names = io_names(function, results=False)
    missing = [name for name in arg_names if name not in inputs]
    if missing:
        raise CompileError(f"missing input(s): {', '.join(missing)} (model inputs: {', '.join(arg_names)})")
    unknown = [name for name in inputs if name not in arg_names]
    if unknown:
        raise CompileError(f"unknown input(s): {', '.join(unknown)} (model inputs: {', '.join(arg_names)})")
    args: list[Array] = []
    for name, arg in zip(arg_names, function.body.block.args, strict=True):
        value = np.asarray(inputs[name])
        arg_type = arg.type
        if isinstance(arg_type, TensorType):
            shape, dtype = tuple(arg_type.get_shape()), numpy_dtype_of(arg_type)
            if value.shape != shape:
                raise CompileError(f"input '{name}' has shape {value.shape}, the model expects {shape}")
            if value.dtype != dtype:
                if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                    raise CompileError(f"input '{name}' has dtype {value.dtype}, the model expects {dtype}")
                value = value.astype(dtype)
        args.append(value)
    return args


def dead_values_after(block: Block) -> dict[int, list[SSAValue]]:
    """For each op index of `block`, the values defined in the block (its arguments, its ops'
    results) that no later op reads, nested regions included; the terminator's operands are
    never dead (run_block returns them)."""
    last_read: dict[SSAValue, int] = {}
    ops = list(block.ops)
    for index, op in enumerate(ops):
        if op.has_trait(IsTerminator):
            for operand in op.operands:
                last_read[operand] = len(ops)
            continue
        for nested in op.walk():
            for operand in nested.operands:
                last_read[operand] = index
    dead: dict[int, list[SSAValue]] = {}
    defined = [(arg, 0) for arg in block.args]
    defined += [(result, index) for index, op in enumerate(ops) for result in op.results]
    for value, index in defined:
        last = last_read.get(value, index)  # never read: dead after its own op
        if last < len(ops):
            dead.setdefault(max(last, index), []).append(value)
    return dead


def run_module(module: ModuleOp, inputs: Mapping[str, Array], store: WeightStore) -> dict[str, Array]:
    """Run `@main` of `module` on named inputs; returns named outputs."""
    interpreter = Interpreter(store)
    return interpreter.run_function(main_function(module), inputs)
