"""The base of `lift-transformer`'s patterns (an anchor op type, a phase, a silent candidate
filter, and a match that either raises `NoMatch` before touching the IR or rewrites) and the
registry the lift reads its phases from.

A pattern registers itself with `@register_lift_pattern` where it is defined; the lift imports
every module `passes/lift_*.py` (`lift_transformer.py`), and a plugin's module registers its
patterns when it is imported, so adding a rule edits no central list. Phases run in increasing
`phase` order, each over the whole function; patterns sharing a phase must have distinct
anchors (then their order within the phase cannot matter, and none is needed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import IntEnum
from typing import ClassVar, TypeVar

from esact_cc.dialects.onnx import OnnxOperation
from esact_cc.passes.lift_transformer_graph import OnnxGraph
from xdsl.ir import Operation


class Phase(IntEnum):
    """The built-in phases, in the order they run (a plugin may use a number in between)."""

    NOOP = 0
    """No-op removal first, so the chains the other rules match are contiguous."""
    ATTENTION = 10
    """Before linear: attention owns its MatMuls and head-merge reshapes."""
    LINEAR = 20
    SPLIT_LINEAR = 30
    LAYER_NORM = 40
    """Before RMSNorm: a decomposed layer norm contains an RMS-like chain."""
    RMS_NORM = 50
    ACTIVATION = 60
    SOFTMAX = 70
    """After attention, which takes the softmaxes of its scores."""
    GATE = 80
    """After the activations: the gate product multiplies an activation's result."""
    RESIDUAL = 90
    """Last: a residual add needs to see which operands came from lifted ops."""


class LiftPattern(ABC):
    """One structural rule: `onnx` ops rooted at an anchor -> `transformer` ops."""

    name: str
    """What the rule produces ("linear", "attention", ...), shown by --debug-lift."""
    anchors: tuple[str, ...]
    """ONNX op types a match starts from."""
    phase: ClassVar[int]
    """When the rule runs (a `Phase`, or a number between two of them)."""

    def is_candidate(self, op: OnnxOperation, graph: OnnxGraph) -> bool:
        """Cheap filter: False means "not even a near miss" (nothing is reported)."""
        return True

    @abstractmethod
    def rewrite(self, op: OnnxOperation, graph: OnnxGraph) -> Operation:
        """Check everything (raising NoMatch), then rewrite; returns the new transformer op."""


_REGISTERED: dict[type[LiftPattern], LiftPattern] = {}

Pattern = TypeVar("Pattern", bound=type[LiftPattern])


def register_lift_pattern(pattern_class: Pattern) -> Pattern:
    """Class decorator: `lift-transformer` runs this rule in its `phase`. A second pattern of
    that phase with one of its anchors is a bug (ValueError): which ran first would matter."""
    if pattern_class in _REGISTERED:
        raise ValueError(f"lift pattern {pattern_class.__qualname__} is already registered")
    for other in _REGISTERED.values():
        shared = set(other.anchors) & set(pattern_class.anchors)
        if other.phase == pattern_class.phase and shared:
            raise ValueError(
                f"lift patterns {type(other).__qualname__} and {pattern_class.__qualname__} "
                f"share phase {pattern_class.phase} and anchor {sorted(shared)[0]}")
    _REGISTERED[pattern_class] = pattern_class()
    return pattern_class


def unregister_lift_pattern(pattern_class: type[LiftPattern]) -> None:
    """Forget a registered pattern (a plugin unloaded, a test restoring the registry)."""
    del _REGISTERED[pattern_class]


def registered_phases() -> tuple[tuple[LiftPattern, ...], ...]:
    """The registered patterns grouped by phase, phases in increasing order (within a phase,
    by name then class name: deterministic, though the anchors make the order irrelevant)."""
    by_phase: dict[int, list[LiftPattern]] = {}
    for pattern in _REGISTERED.values():
        by_phase.setdefault(pattern.phase, []).append(pattern)
    return tuple(
        tuple(sorted(patterns, key=lambda p: (p.name, type(p).__qualname__)))
        for _, patterns in sorted(by_phase.items()))
