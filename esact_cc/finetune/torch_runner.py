"""Run a `transformer`-level module (SPLS inserted or not) in torch, with gradients to weights.

The walk is the reference interpreter's, op by op, over a batch of inputs (each input with the
model's own batch dim of 1; exported models fix it). Values are of three kinds:
- torch tensors [B, ...]: values a trainable weight reaches; their ops run through
  `torch_kernels` on the whole batch;
- `PerInput` lists of numpy arrays: values that depend on the inputs but on no trainable weight
  (the model's prefix: patch or token embedding, attention-mask preprocessing), computed per
  input by the reference interpreter itself and cached per input across optimizer steps, since
  no weight changes them; and the SPLS prediction's results;
- numpy arrays: constants.
The SPLS prediction ops (`spls.*`) always run in numpy per input on detached values, exactly as
the compiler defines them (runtime/spls_kernels.py): HLog rounding, top-k and the similarity
threshold are step functions, so they pass no gradient, and the masks they produce (reuse map,
key mask, SPA) select rows and keys in the torch GEMMs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
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
"""Ops run in numpy even when a trained value reaches them: the SPLS prediction."""
REUSE_OP = "spls.local_similarity"


class PerInput(list):
    """One numpy array per input of the batch (each with the model's batch dim of 1).
    `trained`: made from values a trainable weight reaches (the SPLS masks): never cached."""

    def __init__(self, arrays=(), trained: bool = False):
        super().__init__(arrays)
        self.trained = trained


def batched(value: Any) -> Any:
    """A value as a kernel takes it: PerInput arrays concatenated on the batch axis."""
    if isinstance(value, PerInput):
        if any(a.ndim == 0 or a.shape[0] != 1 for a in value):
            raise CompileError("fine-tuning batches inputs on axis 0, whose size must be 1")
        return np.concatenate(value, axis=0)
    return value


def input_slice(value: Any, index: int, unbatched: set[int]) -> np.ndarray:
    """Input `index`'s part of a value (constants and `unbatched` tensors are every input's)."""
    if isinstance(value, PerInput):
        return value[index]
    if isinstance(value, torch.Tensor):
        return (value if id(value) in unbatched else value[index:index + 1]).detach().numpy()
    return np.asarray(value)


class TorchRunner:
    """Runs `@main` of a module with the weights named in `params` as torch tensors.

    `cache` (shared by the runners of one training run, whose modules differ only in weights)
    keeps the weight-independent per-input values by (input key, op position)."""

    def __init__(self, module: ModuleOp, store: WeightStore, params: Mapping[str, Any],
                 cache: dict | None = None):
        self.function = main_function(module)
        self.numpy = Interpreter(store)
        self.params = params
        self.cache = cache if cache is not None else {}
        self.reuse_maps: list[np.ndarray] = []
        """The reuse maps of the last run, one per SPLS layer and input."""
        self._keys: Sequence[Hashable] = ()
        self._position = 0
        self._unbatched: set[int] = set()
        """ids of the torch values without the batch axis: the weights, and what only they make."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Named outputs of one input (no caching)."""
        return self.run_batch([inputs], [None])

    def run_batch(self, batch: Sequence[Mapping[str, np.ndarray]],
                  keys: Sequence[Hashable | None]) -> dict[str, Any]:
        """Named outputs of a batch of inputs, [B, ...]: torch tensors where a trainable weight
        reaches them, else numpy. `keys` name the inputs for the cache (None: not cached)."""
        names = io_names(self.function, results=False)
        missing = sorted({n for inputs in batch for n in names if n not in inputs})
        if missing:
            raise CompileError(f"missing input(s): {', '.join(missing)}")
        self.reuse_maps, self._keys, self._position = [], keys, 0
        self._unbatched = {id(p) for p in self.params.values()}
        args = [PerInput(np.asarray(inputs[n]) for inputs in batch) for n in names]
        outputs = [batched(v) for v in self._run_block(self.function.body.block, args, {})]
        return dict(zip(io_names(self.function, results=True), outputs, strict=True))

    def _run_block(self, block: Block, args: list[Any], env: dict) -> list[Any]:
        for block_arg, value in zip(block.args, args, strict=True):
            env[block_arg] = value
        for op in block.ops:
            values = [env[operand] for operand in op.operands]
            if op.has_trait(IsTerminator):
                return values
            self._position += 1
            for result, value in zip(op.results, self._run_op(op, values, env), strict=True):
                env[result] = value
        return []

    def _run_op(self, op: Operation, values: list[Any], env: dict) -> list[Any]:
        if op.name == "onnx.weight":
            name = op.weight_name.data  # type: ignore[attr-defined]
            return [self.params[name] if name in self.params else self.numpy.store[name]]
        live = any(isinstance(v, torch.Tensor) for v in values)
        if op.name.startswith(NUMPY_ONLY_PREFIX) or (
                not live and any(isinstance(v, PerInput) for v in values)):
            trained = live or any(isinstance(v, PerInput) and v.trained for v in values)
            return self._per_input(op, values, trained)
        if not live:
            return self.numpy.run_op(op, list(values))
        if op.name == "transformer.host":
            return self._run_block(op.regions[0].block, values, env)
        if op.name.startswith("onnx."):
            results = [self._run_onnx(op, [batched(v) for v in values])]
        else:
            kernel = TORCH_KERNELS.get(op.name)
            if kernel is None:
                raise CompileError(f"fine-tuning: {op.name} (after a trained weight) has no "
                                   "torch form (esact_cc/finetune/torch_kernels.py)")
            results = kernel(op, [batched(v) for v in values])
        if not any(isinstance(v, PerInput) or (isinstance(v, torch.Tensor)
                                               and id(v) not in self._unbatched)
                   for v in values):
            self._unbatched.update(id(r) for r in results)
        return results

    def _per_input(self, op: Operation, values: list[Any], trained: bool) -> list[Any]:
        """The reference interpreter's results of `op`, input by input (PerInput each);
        cached unless a trainable weight reaches them."""
        per_result = [PerInput(trained=trained) for _ in op.results]
        for index, key in enumerate(self._keys):
            slot = (key, self._position, op.name)
            use_cache = not trained and key is not None
            if use_cache and slot in self.cache:
                results = self.cache[slot]
            else:
                results = self.numpy.run_op(
                    op, [input_slice(v, index, self._unbatched) for v in values])
                if use_cache:
                    self.cache[slot] = results
            if op.name == REUSE_OP:
                self.reuse_maps.append(results[0])
            for collected, result in zip(per_result, results, strict=True):
                collected.append(result)
        return per_result

    def reuse_counts(self) -> tuple[int, int]:
        """(reused rows, rows) over the SPLS layers and inputs of the last run."""
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
        positions: Any = op.attributes.get("onnx_input_positions")
        inputs: list[Any] = list(values)
        if positions is not None:
            inputs = [None] * (max(positions.get_values(), default=-1) + 1)
            for position, value in zip(positions.get_values(), values, strict=True):
                inputs[position] = value
        return kernel(inputs, onnx_attrs_of(op))
