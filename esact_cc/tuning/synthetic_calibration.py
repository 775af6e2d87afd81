"""The calibration set used when the user has no calibration data: samples drawn from the
model's own input domain, read from the IR.

- Token ids: the integer input that indexes the largest embedding table (an `onnx.Gather` of a
  weight, reached through casts and reshapes, inside host regions too) is drawn uniformly over
  that table's rows, the vocabulary.
- Other integer inputs that index an embedding table (segment / token-type ids): 0.
- Other integer and boolean inputs (attention masks): 1.
- Float inputs (images, embeddings): standard normal.

Seeded (`SYNTHETIC_SEED`), so a compile is deterministic; `count` samples (`calibrate`'s
`synthetic-samples`, default `default_sample_count`: enough to cover SYNTHETIC_CALIBRATION_ROWS
activation rows, at most DEFAULT_SYNTHETIC_SAMPLES). Several samples matter: one input shows
each activation only a fraction of its range, and a scale set on it clips the rest.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Block, Operation, SSAValue

from esact_cc import tensor_types
from esact_cc.dialects.onnx import WeightOp
from esact_cc.ir_queries import io_names, main_function
from esact_cc.runtime.errors import CompileError

SYNTHETIC_SEED = 0
DEFAULT_SYNTHETIC_SAMPLES = 8
"""At most this many synthetic samples by default (bench/int8_without_calibration.py: 8 of 128
tokens)."""
SYNTHETIC_CALIBRATION_ROWS = 256
"""Activation rows (tokens) per linear the default synthetic set covers: 8 samples of up to 32
tokens (the test fixtures' 16, the digits ViT's 17), 2 of 128 tokens, 1 from 256. Calibration
time grows with the rows, and more rows of uniformly drawn tokens set no better ranges: at 128
tokens 2 samples give BERT-base and all-MiniLM-L6-v2 the accuracy of 8 in a quarter of the time,
at 512 1 sample that of 2 (README "INT8 calibration", bench/calibration_rows_budget.py). Not 1
sample at 128 tokens: MiniLM's channel peaks from 128 rows split its group scales into more runs
(+10% instructions, +8.5% on-chip energy; 2 samples: +1.8%, +1.0%)."""

_INDEX_PRESERVING = ("onnx.Cast", "onnx.Reshape", "onnx.Unsqueeze", "onnx.Squeeze",
                     "onnx.Flatten", "onnx.Identity", "onnx.Expand")
"""Ops through which an input still holds the same ids."""


def _arg_spec(arg: SSAValue) -> tuple[tuple[int, ...], np.dtype]:
    typ = arg.type
    if not isinstance(typ, TensorType):
        raise CompileError(f"function argument of type {typ} is not a tensor")
    return tuple(typ.get_shape()), tensor_types.numpy_dtype_of(typ)


def _id_uses(value: SSAValue) -> Iterator[tuple[Operation, int]]:
    """(op, operand index) of every use of `value`, following index-preserving ops and region
    boundaries (a host region's block argument is its operand)."""
    pending, seen = [value], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for use in current.uses:
            op = use.operation
            yield op, use.index
            if op.name in _INDEX_PRESERVING and op.results:
                pending.append(op.results[0])
            for region in op.regions:  # region-carrying ops pass operands to block arguments
                block: Block | None = region.blocks.first
                if block is not None and use.index < len(block.args):
                    pending.append(block.args[use.index])


def embedding_rows(value: SSAValue) -> int | None:
    """Rows of the largest weight table `value` indexes through a Gather (None: none)."""
    rows = [
        op.operands[0].type.get_shape()[0]
        for op, index in _id_uses(value)
        if op.name == "onnx.Gather" and index == 1
        and isinstance(op.operands[0].owner, WeightOp)
        and isinstance(op.operands[0].type, TensorType) and op.operands[0].type.get_shape()
    ]
    return max(rows) if rows else None


def default_sample_count(rows_per_sample: int) -> int:
    """Synthetic samples without `synthetic-samples`: enough that `rows_per_sample` (the rows of
    one sample's tallest linear input) cover SYNTHETIC_CALIBRATION_ROWS, at most
    DEFAULT_SYNTHETIC_SAMPLES."""
    return min(DEFAULT_SYNTHETIC_SAMPLES, max(1, -(-SYNTHETIC_CALIBRATION_ROWS // rows_per_sample)))


def synthetic_calibration_samples(module: ModuleOp, count: int) -> list[dict[str, np.ndarray]]:
    """`count` deterministic samples from the model's input domain (see the module docstring)."""
    function: func.FuncOp = main_function(module)
    names = io_names(function, results=False)
    specs = [_arg_spec(arg) for arg in function.args]
    tables = [None if np.issubdtype(dtype, np.floating) else embedding_rows(arg)
              for arg, (_, dtype) in zip(function.args, specs)]
    vocabulary = max((rows for rows in tables if rows is not None), default=None)
    token_input = tables.index(vocabulary) if vocabulary is not None else None
    rng = np.random.default_rng(SYNTHETIC_SEED)
    samples = []
    for _ in range(count):
        sample = {}
        for index, (name, (shape, dtype)) in enumerate(zip(names, specs)):
            if np.issubdtype(dtype, np.floating):
                sample[name] = rng.standard_normal(shape).astype(dtype)
            elif index == token_input:
                sample[name] = rng.integers(0, vocabulary, shape).astype(dtype)
            elif tables[index] is not None:
                sample[name] = np.zeros(shape, dtype)
            else:
                sample[name] = np.ones(shape, dtype)
        samples.append(sample)
    return samples
