"""The bounds the ONNX frontend enforces on a model, each checked before the allocation it guards.

A model is untrusted input: a few kilobytes can ask for terabytes (a dim of 2^40, a Tile whose
repeat count only a computation reveals, local functions that call each other twice per level).
Every size a model states or implies is checked against these numbers first, and a model
beyond one is refused with one line naming the node, value or file.

- `MODEL_FILE_CAP`: bytes of the `.onnx` file itself (read into memory, never mapped).
- `EXTERNAL_DATA_CAP`: bytes of all external-data files of one model together.
- `MAX_NODES`: nodes of the graph after every local function call is inlined (counted on the
  call tree before inlining, so a doubling call chain is refused without being expanded);
  `MAX_FUNCTION_DEPTH`: how deep local function calls may nest.
- `MAX_DIM`, `MAX_TENSOR_ELEMENTS`: every dim of every value (graph inputs, `--input-shape`,
  inferred and declared shapes, folded constants), and its element count.
- `MIN_OPSET`..`MAX_OPSET`: the default-domain opsets accepted.
- `FOLD_MAX_ELEMENTS`: a compile-time (folded) constant; a node whose result would be larger
  is predicted before it is evaluated (`folded_result_size`) and stays a node.
"""

from __future__ import annotations

from collections.abc import Sequence

from esact_cc.runtime.errors import CompileError

GiB = 1 << 30
MODEL_FILE_CAP = 4 * GiB
EXTERNAL_DATA_CAP = 16 * GiB
MAX_NODES = 200_000
"""BERT-large exports to about 3k nodes, GPT-2 XL to about 12k."""
MAX_FUNCTION_DEPTH = 64
"""Local functions calling local functions: deeper nesting is refused (exporters nest a few)."""
MAX_DIM = (1 << 31) - 1
"""The runtime's I/O descriptors hold int32 dims."""
MAX_TENSOR_ELEMENTS = 1 << 30
"""4 GiB of float32: far beyond any activation of the Transformers we compile."""
FOLD_MAX_ELEMENTS = 1 << 20
"""Folded constants land in the weight store and the binary: shape vectors and masks, not
activations."""
MIN_OPSET = 11
MAX_OPSET = 23
"""Default-domain opsets whose semantics `interpret_onnx_ops` implements (Slice/Clip/Pad take
inputs from 11 on; 24+ change Cast and add element types we do not model)."""


def count_text(count: float) -> str:
    """A count for an error line: exact below 2^64, then the power of two it reaches."""
    return str(count) if count < 1 << 64 else f"at least 2^{int(count).bit_length() - 1}"


def shape_text(shape: Sequence[int | str]) -> str:
    """A shape for an error line (`2x3x4`; the first dims and the rank of a very long one)."""
    dims = [str(d) for d in shape]
    return "x".join(dims) if len(dims) <= 8 else "x".join(dims[:8]) + f"x... (rank {len(dims)})"


def check_shape(shape: Sequence[int], what: str) -> None:
    """Raise a `CompileError` naming `what` if a dim or the element count is beyond the caps.
    Dims of -1 (unknown) are skipped."""
    count = 1
    for axis, size in enumerate(shape):
        if size > MAX_DIM:
            raise CompileError(f"{what}: dim {axis} is {size}, beyond the limit of {MAX_DIM}")
        if size >= 0:
            count *= size
    if count > MAX_TENSOR_ELEMENTS:
        raise CompileError(
            f"{what}: shape {shape_text(shape)} has {count_text(count)} elements, "
            f"beyond the limit of {MAX_TENSOR_ELEMENTS}"
        )
