"""Run a `transformer`-level module (SPLS inserted or not) in torch, with gradients to weights.

The walk is the reference interpreter's, op by op, with one rule per value: a value that a
trainable weight reaches is a torch tensor and its op runs through `torch_kernels`; every other
value is a numpy array computed by the reference interpreter itself (the model's prefix: patch
or token embedding, attention-mask preprocessing). The SPLS prediction ops (`spls.*`) always run
in numpy on detached values, exactly as the compiler defines them (runtime/spls_kernels.py): HLog
rounding, top-k and the similarity threshold are step functions, so they pass no gradient, and
the masks they produce (reuse map, key mask, SPA) select rows and keys in the torch GEMMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation
from xdsl.traits import IsTerminator

from esact_cc.finetune.torch_required import import_torch
from esact_cc.ir_queries import io_names, main_function
from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

torch = import_torch()

from esact_cc.finetune.torch_kernels import ONNX_TORCH_KERNELS, TORCH_KERNELS  # noqa: E402
from esact_cc.interpreter.reference_interpreter import Interpreter  # noqa: E402

NUMPY_ONLY_PREFIX = "spls."
REUSE_OP = "spls.local_similarity"
"""Ops run in numpy even when a trained value reaches them: the SPLS prediction."""


def as_numpy(value: Any) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class TorchRunner:
    """Runs `@main` of a module with the weights named in `params` as torch tensors."""

    def __init__(self, module: ModuleOp, store: WeightStore, params: Mapping[str, Any]):
        self.function = main_function(module)
        self.numpy = Interpreter(store)
        self.params = params
        self.reuse_maps: list[np.ndarray] = []
        """The reuse maps of the last `run`, one per SPLS layer."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Named outputs: torch tensors where a trainable weight reaches them, else numpy."""
        names = io_names(self.function, results=False)
        missing = [n for n in names if n not in inputs]
        if missing:
            raise CompileError(f"missing input(s): {', '.join(missing)}")
        block = self.function.body.block
        self.reuse_maps = []
        args = [np.asarray(inputs[n]) for n in names]
        outputs = self._run_block(block, args, {})
        return dict(zip(io_names(self.function, results=True), outputs, strict=True))

    def _run_block(self, block: Block, args: list[Any], env: dict) -> list[Any]:
        for block_arg, value in zip(block.args, args, strict=True):
            env[block_arg] = value
        for op in block.ops:
            values = [env[operand] for operand in op.operands]
            if op.has_trait(IsTerminator):
                return values
            for result, value in zip(op.results, self._run_op(op, values, env), strict=True):
                env[result] = value
        return []

    def _run_op(self, op: Operation, values: list[Any], env: dict) -> list[Any]:
        if op.name == "onnx.weight":
            name = op.weight_name.data  # type: ignore[attr-defined]
            return [self.params[name] if name in self.params else self.numpy.store[name]]
        live = any(isinstance(v, torch.Tensor) for v in values)
        if not live or op.name.startswith(NUMPY_ONLY_PREFIX):
            results = self.numpy.run_op(op, [as_numpy(v) for v in values])
            if op.name == REUSE_OP:
                self.reuse_maps.append(results[0])
            return results
        if op.name == "transformer.host":
            return self._run_block(op.regions[0].block, values, env)
        if op.name.startswith("onnx."):
            return [self._run_onnx(op, values)]
        kernel = TORCH_KERNELS.get(op.name)
        if kernel is None:
            raise CompileError(f"fine-tuning: {op.name} (after a trained weight) has no torch "
                               "form (esact_cc/finetune/torch_kernels.py)")
        return kernel(op, values)

    def reuse_counts(self) -> tuple[int, int]:
        """(reused rows, rows) over the SPLS layers of the last `run`."""
        return (sum(int((m >= 0).sum()) for m in self.reuse_maps),
                sum(int(m.size) for m in self.reuse_maps))

    @staticmethod
    def _run_onnx(op: Operation, values: list[Any]) -> Any:
        from esact_cc.frontend.onnx_attributes import onnx_attrs_of

        op_type = op.name.removeprefix("onnx.")
        kernel = ONNX_TORCH_KERNELS.get(op_type)
        if kernel is None or len(op.results) != 1:
            raise CompileError(f"fine-tuning: ONNX {op_type} after a trained weight has no "
                               "torch form (esact_cc/finetune/torch_kernels.py)")
        positions = op.attributes.get("onnx_input_positions")
        inputs: list[Any] = list(values)
        if positions is not None:
            inputs = [None] * (max(positions.get_values(), default=-1) + 1)  # type: ignore[attr-defined]
            for position, value in zip(positions.get_values(), values, strict=True):  # type: ignore[attr-defined]
                inputs[position] = value
        return kernel(inputs, onnx_attrs_of(op))
