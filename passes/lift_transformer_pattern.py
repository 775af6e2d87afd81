"""The base of `lift-transformer`'s patterns: an anchor op type, a silent candidate filter, and
a match that either raises `NoMatch` (before touching the IR) or rewrites.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_transformer_graph import OnnxGraph
from xdsl.ir import Operation


class LiftPattern(ABC):
    """One structural rule: `onnx` ops rooted at an anchor -> `transformer` ops."""

    name: str
    """What the rule produces ("linear", "attention", ...), shown by --debug-lift."""
    anchors: tuple[str, ...]
    """ONNX op types a match starts from."""

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        """Cheap filter: False means "not even a near miss" (nothing is reported)."""
        return True

    @abstractmethod
    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        """Check everything (raising NoMatch), then rewrite; returns the new transformer op."""
