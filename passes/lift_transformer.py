"""lift-transformer: rewrites `onnx` dialect graphs into the `transformer` dialect.

Structural rules (one file per family, beside this one) run in phases, each over the whole
function in program order:

0. no-ops (`lift_noop.py`): same-shape Reshapes, Identity, inference Dropout are bypassed;
1. attention (`lift_attention.py`): head split, scaled Q K^T, masks, Softmax, P V, head merge;
2. linear (`lift_linear.py`): MatMul + bias Add, Gemm, transposed weights, flatten reshapes;
3. split-linear: fused QKV projections split along the output axis;
4. layer norm, 5. GELU, 6. softmax, 7. residual add (`lift_norm_activation.py`).

Each rule checks every constant it relies on (perms, axes, reshape shapes, epsilon, scale,
GELU coefficients); a candidate failing a check is left as it is (a near miss) and, with
`debug=true` (`esact-cc --debug-lift`), reported on stderr with the check that failed. Dead
`onnx` ops are removed after each phase. Finally the ops the accelerator does not run are
grouped into `transformer.host` regions (`host_regions.py`).

Weights that must be transposed, scaled or sliced go into the module's weight store
(`esact_cc.weight_store.store_of`) under new names.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.passes.host_regions import group_host_regions
from esact_cc.passes.lift_attention import AttentionPattern
from esact_cc.passes.lift_linear import LinearPattern, SplitLinearPattern
from esact_cc.passes.lift_noop import NoopPattern
from esact_cc.passes.lift_norm_activation import (
    DecomposedLayerNormPattern,
    ErfGeluPattern,
    GeluPattern,
    LayerNormPattern,
    ResidualAddPattern,
    SoftmaxPattern,
    TanhGeluPattern,
)
from esact_cc.passes.lift_transformer_graph import NoMatch, OnnxGraph, location_name
from esact_cc.passes.lift_transformer_pattern import LiftPattern
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block
from xdsl.passes import ModulePass
from xdsl.traits import Pure

from esact_cc.weight_store import WeightStore, store_of

PHASES: tuple[tuple[LiftPattern, ...], ...] = (
    (NoopPattern(),),
    (AttentionPattern(),),
    (LinearPattern(),),
    (SplitLinearPattern(),),
    (LayerNormPattern(), DecomposedLayerNormPattern()),
    (GeluPattern(), ErfGeluPattern(), TanhGeluPattern()),
    (SoftmaxPattern(),),
    (ResidualAddPattern(),),
)
"""Rule phases in order: no-op removal first (so chains are contiguous), attention before
linear (it owns its MatMuls and head-merge reshapes), residual adds last (they need to see
which operands came from lifted ops)."""


@dataclass
class LiftReport:
    """What one run lifted and which candidates were near misses."""

    lifted: Counter[str] = field(default_factory=Counter)
    """Rule name -> number of ops it produced."""
    near_misses: list[str] = field(default_factory=list)
    """One line per failed candidate: `<rule> at <node>: <check that failed>`."""


def lift_module(module: ModuleOp, store: WeightStore, group_host: bool = True) -> LiftReport:
    """Lift every function of `module` in place; returns what was lifted and missed."""
    report = LiftReport()
    graph = OnnxGraph(store)
    for function in [op for op in module.walk() if isinstance(op, func.FuncOp)]:
        block = function.body.block
        for phase in PHASES:
            _run_phase(block, phase, graph, report)
            erase_dead_ops(block)
        if group_host:
            group_host_regions(function)
    return report


def _run_phase(
    block: Block, phase: tuple[LiftPattern, ...], graph: OnnxGraph, report: LiftReport
) -> None:
    by_anchor: dict[str, list[LiftPattern]] = {}
    for pattern in phase:
        for anchor in pattern.anchors:
            by_anchor.setdefault(anchor, []).append(pattern)
    for op in list(block.ops):
        if not isinstance(op, OnnxOperation) or op.parent is not block:
            continue
        if all(r.uses.get_length() == 0 for r in op.results):
            continue  # dead: consumed by an earlier match of this phase
        for pattern in by_anchor.get(op.op_type, ()):
            try:
                if not pattern.is_candidate(op, graph):
                    continue
                pattern.rewrite(op, graph)
            except NoMatch as miss:
                where = location_name(op)
                check = str(miss).removeprefix(f"{where}: ")
                report.near_misses.append(f"{pattern.name} at '{where}': {check}")
                continue
            report.lifted[pattern.name] += 1
            break


def erase_dead_ops(block: Block) -> None:
    """Remove side-effect-free ops (onnx, weights, lifted ops) whose results are all unused."""
    for op in reversed(list(block.ops)):
        removable = isinstance(op, OnnxOperation | WeightOp) or op.has_trait(Pure)
        if removable and op.results and all(r.uses.get_length() == 0 for r in op.results):
            block.erase_op(op)


@dataclass(frozen=True)
class LiftTransformerPass(ModulePass):
    """Rewrite `onnx` ops into `transformer.linear/attention/layer_norm/gelu/softmax/add`,
    grouping the rest into `transformer.host` regions."""

    name = "lift-transformer"

    debug: bool = False
    """Print every near miss (candidate and failed check) to stderr."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = lift_module(op, store_of(op))
        if self.debug:
            for line in report.near_misses:
                print(f"lift-transformer: near miss: {line}", file=sys.stderr)
            summary = (
                ", ".join(f"{n} {name}" for name, n in sorted(report.lifted.items())) or "nothing"
            )
            print(f"lift-transformer: lifted {summary}", file=sys.stderr)
