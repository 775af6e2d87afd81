"""What the attention-only sparsity passes share (passes/insert_sanger.py, insert_spatten.py):
finding the INT8 attentions a scheme can mask, their per-layer options, and swapping an
attention for its masked copy. Each pass keeps its own op, eligibility rule and messages.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, ClassVar

from xdsl.dialects import func
from xdsl.ir import Operation
from xdsl.rewriter import Rewriter

from esact_cc import typed_options
from esact_cc.dialects import transformer
from esact_cc.ir_queries import op_label
from esact_cc.passes.dead_rows import narrowed_query_note
from esact_cc.runtime.errors import CompileError


def eligible_attentions(function: func.FuncOp, name: str, reads: str,
                        unsupported: Callable[[transformer.AttentionOp], str | None]
                        ) -> list[transformer.AttentionOp]:
    """The unmasked attentions of `function`, in program order, that the pass `name` masks.
    An FP32 one is an error (the scheme `reads` its INT8 operands); one that `unsupported`
    describes is left dense with that description on stderr."""
    found = []
    for op in function.body.walk():
        if not isinstance(op, transformer.AttentionOp) or op.is_masked:
            continue
        if not op.is_quantized:
            raise CompileError(f"{name}: {op_label(op)}: the attention is not INT8 (run "
                               f"quantize first: {reads})")
        why = narrowed_query_note(op) or unsupported(op)
        if why:
            print(f"warning: {name}: {op_label(op)}: {why}; layer left dense", file=sys.stderr)
            continue
        found.append(op)
    return found


class LayerOptionsPass:
    """For a frozen-dataclass pass that inherits its options dataclass `OPTIONS` and adds a
    `layers` field: the uniform options and the per-layer overrides, checked at construction."""

    OPTIONS: ClassVar[type]
    NAME: ClassVar[str]
    layers: str

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]  (the options' own validation)
        self.layer_overrides()  # bad text fails here

    def base_options(self) -> Any:
        return self.OPTIONS(**{f.name: getattr(self, f.name) for f in fields(self.OPTIONS)})

    def layer_overrides(self) -> dict[int, Any]:
        base = self.base_options()
        overrides = typed_options.parse_layer_overrides(self.OPTIONS, self.layers, self.NAME)
        return {layer: replace(base, **values) for layer, values in overrides.items()}

    def reject_unknown_layers(self, overrides: dict[int, Any], indices: list[int],
                              total: int, which: str) -> None:
        """A per-layer option for a layer the pass does not mask is an error, not ignored."""
        unknown = sorted(set(overrides) - set(indices))
        if unknown:
            raise CompileError(f"{self.NAME}: per-layer options for layer(s) "
                               f"{', '.join(map(str, unknown))}, but the model has {total} "
                               f"attention layer(s) {which}")


def replace_attention(old: Operation, new: Operation) -> None:
    new.attributes.update(old.attributes)
    new.location = old.location  # keep the ONNX node name
    Rewriter.replace_op(old, new)
