"""lift-transformer: rewrites `onnx` dialect graphs into the `transformer` dialect.

Structural rules (one file per family, beside this one: every `lift_*.py` module is imported
and its patterns register themselves, `lift_transformer_pattern.py`) run in phases (`Phase`),
each over the whole function in program order:

0. no-ops (`lift_noop.py`): same-shape Reshapes, Identity, inference Dropout are bypassed;
1. attention (`lift_attention.py`): head split, scaled Q K^T, masks, Softmax, P V, head merge;
2. linear (`lift_linear.py`): MatMul + bias Add, Gemm, transposed weights, flatten reshapes;
3. split-linear: fused QKV projections split along the output axis;
4. layer norm, 5. RMSNorm (`lift_rms_norm.py`), 6. GELU, SiLU, ReLU, 7. softmax, 8. the gate
   product of gated FFNs (`lift_gated_ffn.py`), 9. residual add (`lift_norm_activation.py`).
Rotary embeddings and grouped-query repeat_kv are part of the attention rule (`lift_rotary.py`).

Each rule checks every constant it relies on (perms, axes, reshape shapes, epsilon, scale,
GELU coefficients); a candidate failing a check is left as it is (a near miss) and, with
`debug=true` (`esact-cc --debug-lift`), reported on stderr with the check that failed. Dead
`onnx` ops are removed after each phase. Finally the ops the accelerator does not run are
grouped into `transformer.host` regions (`host_regions.py`).

Weights that must be transposed, scaled or sliced go into the module's weight store
(the pass's `store` field, passes/weight_store_pass.py) under new names.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from collections import Counter
from dataclasses import dataclass, field

from esact_cc.collector_pause import collector_paused
from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.passes.host_regions import group_host_regions
from esact_cc.passes.layer_roles import analyse, stamp_block
from esact_cc.passes.lift_transformer_graph import NoMatch, OnnxGraph, is_unused, location_name
from esact_cc.passes.lift_transformer_pattern import LiftPattern, registered_phases
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block
from xdsl.traits import Pure

from esact_cc.passes.weight_store_pass import WeightStorePass
from esact_cc.weight_store import WeightStore


def lift_phases() -> tuple[tuple[LiftPattern, ...], ...]:
    """The registered patterns by phase, in the order they run (built-ins and any plugin
    module imported so far)."""
    _import_builtin_patterns()
    return registered_phases()


@functools.cache
def _import_builtin_patterns() -> None:
    """Import every `passes/lift_*.py` module: the built-in patterns register themselves there,
    so a new rule's file needs no line here."""
    package = importlib.import_module(__package__ or "esact_cc.passes")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("lift_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


@dataclass
class LiftReport:
    """What one run lifted and which candidates were near misses."""

    lifted: Counter[str] = field(default_factory=Counter)
    """Rule name -> number of ops it produced."""
    near_misses: list[str] = field(default_factory=list)
    """One line per failed candidate: `<rule> at <node>: <check that failed>`."""


def lift_module(module: ModuleOp, store: WeightStore, group_host: bool = True) -> LiftReport:
    """Lift every function of `module` in place; returns what was lifted and missed."""
    # The IR is reference cycles: full collections would walk all of it, super-linear on a
    # big graph (half the lift time of a 100k-node chain).
    with collector_paused():
        return _lift_functions(module, store, group_host)


def _lift_functions(module: ModuleOp, store: WeightStore, group_host: bool) -> LiftReport:
    report = LiftReport()
    graph = OnnxGraph(store)
    phases = lift_phases()
    for function in [op for op in module.walk() if isinstance(op, func.FuncOp)]:
        block = function.body.block
        # Every full walk of a big block costs cache misses: a phase none of whose anchors is
        # present is skipped, and dead ops are swept only after the IR changed (and once at
        # the start); the op types present are recounted after each sweep.
        present = _onnx_op_types(block)
        for number, phase in enumerate(phases):
            changed = any(a in present for p in phase for a in p.anchors) and _run_phase(
                block, phase, graph, report)
            if changed or number == 0:
                erase_dead_ops(block)
                present = _onnx_op_types(block)
        stamps = analyse(block)  # before grouping: roles see through the host ops one by one
        if group_host:
            group_host_regions(function)
        stamp_block(block, stamps)
    return report


def _onnx_op_types(block: Block) -> set[str]:
    return {op.op_type for op in block.ops if isinstance(op, OnnxOperation)}


def _run_phase(
    block: Block, phase: tuple[LiftPattern, ...], graph: OnnxGraph, report: LiftReport
) -> bool:
    """Apply the phase's patterns; True if any was tried past its candidate filter (a
    rewrite, or a near miss: the IR may have changed)."""
    activity = sum(report.lifted.values()) + len(report.near_misses)
    by_anchor: dict[str, list[LiftPattern]] = {}
    for pattern in phase:
        for anchor in pattern.anchors:
            by_anchor.setdefault(anchor, []).append(pattern)
    for op in list(block.ops):
        if not isinstance(op, OnnxOperation) or op.parent is not block:
            continue
        patterns = by_anchor.get(op.op_type)
        if patterns is None or is_unused(op):
            continue  # not this phase's, or dead: consumed by an earlier match of this phase
        for pattern in patterns:
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
    return sum(report.lifted.values()) + len(report.near_misses) != activity


def erase_dead_ops(block: Block) -> None:
    """Remove side-effect-free ops (onnx, weights, lifted ops) whose results are all unused."""
    for op in reversed(list(block.ops)):
        if not op.results or not is_unused(op):
            continue
        if isinstance(op, OnnxOperation | WeightOp) or op.has_trait(Pure):
            block.erase_op(op)


@dataclass(frozen=True)
class LiftTransformerPass(WeightStorePass):
    """Rewrite `onnx` ops into `transformer.linear/attention/layer_norm/gelu/softmax/add`,
    grouping the rest into `transformer.host` regions."""

    name = "lift-transformer"

    debug: bool = False
    """Print every near miss (candidate and failed check) to stderr."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        report = lift_module(op, self.weights())
        if self.debug:
            for line in report.near_misses:
                print(f"lift-transformer: near miss: {line}", file=sys.stderr)
            summary = (
                ", ".join(f"{n} {name}" for name, n in sorted(report.lifted.items())) or "nothing"
            )
            print(f"lift-transformer: lifted {summary}", file=sys.stderr)
