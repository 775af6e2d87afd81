"""What the accelerator took and what stayed on the host, said after every compile.

`summarize_lift` reads a lifted module (the `transformer` stage or any later one before
lowering) and counts, per kind, the ops lifted to the accelerator and those left on the host:

- attention: a `transformer.attention`; on the host, an ONNX `Attention` or a `Softmax` with
  a MatMul/Einsum of two activations (Q K^T) at most `_SCORE_DEPTH` ops upstream, or such a
  softmax lifted on its own (`transformer.softmax`) on scores a host region computes;
- linear: a `transformer.linear` (every role: projections, FFN, head); on the host, a
  `MatMul`/`Gemm` with a weight operand (directly or through a Transpose/Cast/Reshape);
- norm: an op stamped role `norm` (layer norm, RMS norm, ...); on the host, an ONNX
  `LayerNormalization`/`RMSNormalization`, or a `ReduceMean` of a square (the variance of a
  decomposed layer norm or the mean square of an RMS norm).

Each `transformer.host` region gets one line naming why it is there: the unlifted attention,
linear or norm it holds (`esact-cc --debug-lift` says which check failed), else the op types
the accelerator has no instruction for. `sparsity_layers` reads which attention layers a
sparsity scheme took (their attention op carries a mask) after the `sparsity` stage.

`CompileSummary` collects these at the stages that produce them; esact-cc writes its lines to
stderr once the compile succeeded (never stdout). Two checks run as pipeline passes:
`StrictLiftCheck` (`esact-cc --strict-lift`) makes any attention or linear on the host an
error, and `SchemeTookLayersCheck` makes a sparsity scheme that took no layer an error naming
why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, OpResult, SSAValue
from xdsl.passes import ModulePass

from esact_cc.dialects import transformer
from esact_cc.dialects.gemm_ops import AttentionOp, LinearOp
from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.ir_queries import op_label
from esact_cc.runtime.errors import CompileError

KINDS = ("attention", "linear", "norm")
_SCORE_DEPTH = 4
"""Softmax <- Add (mask) <- Div/Mul (scale) <- MatMul: the score path of an eager attention."""
_WEIGHT_PASSTHROUGH = ("Transpose", "Cast", "Reshape", "Identity", "Unsqueeze")
_MAX_OP_TYPES_SHOWN = 6


@dataclass(frozen=True)
class HostRegionLine:
    index: int
    where: str
    """The location (ONNX node name) of the region's first op."""
    ops: int
    reason: str

    def text(self) -> str:
        return f"host region {self.index} at \"{self.where}\" ({self.ops} op{'' if self.ops == 1 else 's'}): {self.reason}"


@dataclass
class LiftSummary:
    lifted: Counter[str] = field(default_factory=Counter)
    on_host: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    """Kind -> locations of the ops of that kind left on the host."""
    host_regions: list[HostRegionLine] = field(default_factory=list)
    sparsity: str | None = None
    """The scheme's line (`sparsity spls: layers 0, 1 of 2`), once the sparsity stage ran."""
    dead_rows: str | None = None
    """What esact-dead-rows removed (passes/dead_rows.py), once the quantized stage ran."""
    on_chip: str | None = None
    """Activations kept on chip or through DRAM (passes/on_chip_activations.py), once the
    esact stage ran with keep-on-chip."""

    def total(self, kind: str) -> int:
        return self.lifted[kind] + len(self.on_host[kind])

    def lines(self) -> list[str]:
        counts = ", ".join(f"{kind} {self.lifted[kind]}/{self.total(kind)}" for kind in KINDS)
        lines = [f"lifted to the accelerator: {counts}; {len(self.host_regions)} host "
                 f"region(s)"]
        lines += [region.text() for region in self.host_regions]
        lines += [line for line in (self.dead_rows, self.sparsity, self.on_chip)
                  if line is not None]
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "lifted": {kind: self.lifted[kind] for kind in KINDS},
            "total": {kind: self.total(kind) for kind in KINDS},
            "on_host": {kind: list(self.on_host[kind]) for kind in KINDS},
            "host_regions": [{"where": r.where, "ops": r.ops, "reason": r.reason}
                             for r in self.host_regions],
            "sparsity": self.sparsity,
            "dead_rows": self.dead_rows,
            "keep_on_chip": self.on_chip,
        }


def _where(op: Operation) -> str:
    label = op_label(op)
    return label.split(" at ", 1)[1].strip('"') if " at " in label else label


def _producer(value: SSAValue) -> Operation | None:
    return value.op if isinstance(value, OpResult) else None


def _upstream(op: Operation, depth: int) -> Iterator[Operation]:
    """The ops at most `depth` def-use steps above `op` (inside its block)."""
    frontier, seen = [op], {op}
    for _ in range(depth):
        frontier = [p for o in frontier for v in o.operands
                    if (p := _producer(v)) is not None and p not in seen]
        seen.update(frontier)
        yield from frontier


def _is_weight(value: SSAValue) -> bool:
    op = _producer(value)
    while isinstance(op, OnnxOperation) and op.op_type in _WEIGHT_PASSTHROUGH and op.operands:
        op = _producer(op.operands[0])
    return isinstance(op, WeightOp) or (isinstance(op, OnnxOperation) and op.op_type == "Constant")


def _is_activation_product(op: Operation) -> bool:
    return (isinstance(op, OnnxOperation) and op.op_type in ("MatMul", "Einsum")
            and len(op.operands) >= 2 and not any(_is_weight(v) for v in op.operands))


def _is_square(value: SSAValue) -> bool:
    op = _producer(value)
    if not isinstance(op, OnnxOperation):
        return False
    if op.op_type == "Mul" and len(op.operands) == 2:
        return op.operands[0] is op.operands[1]
    return op.op_type == "Pow"


def host_kind(op: OnnxOperation) -> str | None:
    """The kind of accelerator work an op left on the host stands for (None: plain host work)."""
    kind = op.op_type
    if kind == "Attention" or (kind == "Softmax" and any(
            _is_activation_product(p) for p in _upstream(op, _SCORE_DEPTH))):
        return "attention"
    if kind in ("MatMul", "Gemm") and any(_is_weight(v) for v in op.operands[:2]):
        return "linear"
    if kind in ("LayerNormalization", "RMSNormalization") or (
            kind == "ReduceMean" and op.operands and _is_square(op.operands[0])):
        return "norm"
    return None


def _lifted_kind(op: Operation) -> str | None:
    if isinstance(op, AttentionOp):
        return "attention"
    if isinstance(op, LinearOp):
        return "linear"
    role = op.attributes.get("role")
    if role is not None and getattr(role, "data", None) == "norm":
        return "norm"
    return "norm" if isinstance(op, transformer.NormOp) else None


def _scores_from_host(softmax: Operation) -> transformer.HostOp | None:
    """The host region computing Q K^T for a softmax lifted on its own (its attention was
    not lifted: only the softmax reached the accelerator), else None."""
    region = _producer(softmax.operands[0])
    if not isinstance(region, transformer.HostOp):
        return None
    terminator = region.body.block.last_op
    assert terminator is not None
    index = list(region.results).index(softmax.operands[0])
    scores = _producer(terminator.operands[index])
    if scores is None or not any(_is_activation_product(p) for p in
                                 [scores, *_upstream(scores, _SCORE_DEPTH - 1)]):
        return None
    return region


def _region_line(index: int, region: transformer.HostOp, summary: LiftSummary,
                 softmaxes: list[Operation]) -> HostRegionLine:
    """`softmaxes`: the lifted softmaxes of unlifted attentions whose scores it computes."""
    ops = [op for op in region.body.block.ops if isinstance(op, OnnxOperation)
           and op.op_type != "Constant"]
    unlifted: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for softmax in softmaxes:
        unlifted["attention"].append(_where(softmax))
        summary.on_host["attention"].append(_where(softmax))
    for op in ops:
        kind = host_kind(op)
        if kind is not None:
            unlifted[kind].append(_where(op))
            summary.on_host[kind].append(_where(op))
    found = [f"{len(unlifted[k])} {k} not lifted (first at \"{unlifted[k][0]}\")"
             for k in KINDS if unlifted[k]]
    if found:
        reason = "; ".join(found) + " (esact-cc --debug-lift says why)"
    else:
        types = Counter(op.op_type for op in ops).most_common()
        shown = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in types[:_MAX_OP_TYPES_SHOWN])
        more = f", +{len(types) - _MAX_OP_TYPES_SHOWN} more" if len(types) > _MAX_OP_TYPES_SHOWN \
            else ""
        reason = f"no accelerator op for {shown or 'constants only'}{more}"
    first = ops[0] if ops else region
    return HostRegionLine(index, _where(first), len(ops), reason)


def summarize_lift(module: ModuleOp) -> LiftSummary:
    """Counts and host-region lines of a lifted module (before lowering)."""
    summary = LiftSummary()
    for function in (op for op in module.ops if isinstance(op, func.FuncOp)):
        ops = list(function.body.block.ops)
        orphans: dict[Operation, list[Operation]] = {}
        for op in ops:
            if isinstance(op, transformer.SoftmaxOp) and (
                    region := _scores_from_host(op)) is not None:
                orphans.setdefault(region, []).append(op)
        for op in ops:
            if isinstance(op, transformer.HostOp):
                summary.host_regions.append(_region_line(
                    len(summary.host_regions), op, summary, orphans.get(op, [])))
            elif (kind := _lifted_kind(op)) is not None:
                summary.lifted[kind] += 1
    return summary


def sparsity_layers(module: ModuleOp) -> tuple[list[int], int]:
    """(layer indices whose attention carries a sparsity mask, or whose output projection
    does when the attention was left dense (SPLS `dense-prefix=attention`), number of
    attention layers)."""
    attentions = [op for op in module.walk() if isinstance(op, AttentionOp)]
    taken = [index for index, op in enumerate(attentions) if op.is_masked or any(
        isinstance(use.operation, LinearOp) and use.operation.is_masked
        for use in op.result.uses)]
    return taken, len(attentions)


def sparsity_line(scheme: str, module: ModuleOp) -> str:
    taken, total = sparsity_layers(module)
    if scheme == "dense":
        return "sparsity dense: no layer masked"
    return (f"sparsity {scheme}: layer(s) {', '.join(map(str, taken)) or 'none'} of {total} "
            "attention layer(s)")


class CompileSummary:
    """The summary of one compile, collected from the stages that produce it (the `on_stage`
    hook of `pipeline.compile_model`) and written once the compile succeeded."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.summary: LiftSummary | None = None

    def observe(self, stage: str, module: ModuleOp) -> None:
        if stage == "transformer":
            self.summary = summarize_lift(module)
        elif stage == "quantized" and self.summary is not None:
            from esact_cc.passes.dead_rows import dead_rows_line

            self.summary.dead_rows = dead_rows_line(module)
        elif stage == "sparsity" and self.summary is not None:
            self.summary.sparsity = sparsity_line(self.scheme, module)
        elif stage == "esact" and self.summary is not None:
            from esact_cc.passes.on_chip_activations import SUMMARY_ATTR

            line = module.attributes.get(SUMMARY_ATTR)
            self.summary.on_chip = line.data if isinstance(line, StringAttr) else None

    def write(self, stream: TextIO, prog: str) -> None:
        """One `prog: ` line each (nothing if the lift stage did not run in this compile)."""
        for line in self.summary.lines() if self.summary is not None else []:
            stream.write(f"{prog}: {line}\n")


def scheme_name(options: Mapping[str, Any]) -> str:
    """The sparsity scheme the compile options select (`sparsity.selection`)."""
    from esact_cc.sparsity.selection import select_scheme

    return select_scheme(options)[0].name


def _host_work_text(summary: LiftSummary, kinds: tuple[str, ...]) -> str:
    return ", ".join(f"{len(summary.on_host[k])} {k} (first at \"{summary.on_host[k][0]}\")"
                     for k in kinds if summary.on_host[k])


@dataclass(frozen=True)
class StrictLiftCheck(ModulePass):
    """`--strict-lift`: an attention or linear left on the host is an error."""

    name = "check-strict-lift"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        left = _host_work_text(summarize_lift(op), ("attention", "linear"))
        if left:
            raise CompileError(f"--strict-lift: left on the host: {left}; esact-cc "
                               "--debug-lift says which check failed")


@dataclass(frozen=True)
class SchemeTookLayersCheck(ModulePass):
    """A sparsity scheme (other than dense) that masked no attention layer is an error."""

    name = "check-scheme-took-layers"

    scheme: str = "dense"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.scheme == "dense":
            return
        taken, total = sparsity_layers(op)
        if taken:
            return
        if total == 0:
            left = _host_work_text(summarize_lift(op), ("attention",))
            why = ("the model has no attention lifted to the accelerator"
                   + (f" ({left} stays on the host; esact-cc --debug-lift says why)" if left
                      else " (it has no attention)"))
        else:
            why = (f"each of its {total} attention layer(s) was left dense (the scheme's "
                   "warnings above say why)")
        raise CompileError(f"--sparsity {self.scheme} can take no layer: {why}")
