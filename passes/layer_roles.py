"""Layers and roles of Transformer ops, derived from the graph's structure (never node names).

`lift-transformer` stamps every op it produces (and every `transformer.host` region) with two
attributes that later passes copy onto the ops they create from it:

    %q = transformer.linear %x, %w, %b {layer = 0 : i64, role = "q"} : ...

`layer` counts attention ops in program (topological) order, so a weight-shared layer applied
twice (ALBERT) is two layers; -1 is outside every layer (embeddings, mask preprocessing, final
norm, pooler, classifier). An op belongs to layer n when:
- it feeds attention n's Q, K or V and nothing else (the projections, a pre-LN norm), or
- attention n is the latest attention upstream of it, and it is not past the layer's exit: the
  end of the residual stream walked from the attention's residual add through the layer's
  further residual adds (and, in a post-LN layer, the norms on the stream).

Roles (`ROLES`), and where each is derived:
- q, k, v: a linear whose output reaches attention operand 0, 1, 2 (through elementwise or host
  ops, not through another linear, attention, residual add or norm);
- o: a linear whose input comes from an attention the same way;
- ffn_down: any other linear of a layer whose output reaches no linear of its layer;
- ffn_up / ffn_gate: the linears of a layer reaching an ffn_down. With two or more (a gated
  FFN, act(x W_gate) * (x W_up)), the up projection is the one read directly by the op making
  the down projection's input (the product) and the gate is the one whose output is first
  transformed (the activation); one alone, or none distinguishable, is ffn_up;
- head: a linear outside every layer with no attention downstream (pooler, classifier);
  proj: one outside every layer with attention downstream (an embedding projection);
- attention, norm (layer norm, RMSNorm), activation (GELU, SiLU, ReLU, a gated FFN's product),
  softmax, residual, rotary, host, select_rows (esact-dead-rows): by op kind; predict: SPLS prediction ops (they take the
  layer of the attention they predict).

IR written by hand carries no stamps: `layers_and_roles` derives them the same way, without
writing them. The binary's debug map names a linear by `COMPONENT_OF_ROLE`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from esact_cc.dialects import spls, transformer
from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.ir_queries import op_label
from esact_cc.runtime.errors import CompileError
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Operation, OpResult, SSAValue
from xdsl.irdl import IRDLOperation

LAYER_ATTR = "layer"
ROLE_ATTR = "role"
NO_LAYER = -1

LINEAR_ROLES = ("q", "k", "v", "o", "ffn_up", "ffn_gate", "ffn_down", "head", "proj")
ROLES = (*LINEAR_ROLES, "attention", "norm", "activation", "softmax", "residual", "rotary",
         "host", "predict", "select_rows")

COMPONENT_OF_ROLE = {"q": "q", "k": "k", "v": "v", "o": "o", "ffn_up": "ffn1",
                     "ffn_gate": "ffn1", "ffn_down": "ffn2", "head": "head", "proj": "proj"}
"""A linear's component in the binary's debug map and the reports (the up and gate projections
are both the FFN's first GEMM)."""

_ROLE_OF_KIND: dict[type[Operation], str] = {
    transformer.GeluOp: "activation", transformer.SiluOp: "activation",
    transformer.ReluOp: "activation",
    transformer.MulOp: "activation", transformer.RotaryOp: "rotary",
    transformer.SoftmaxOp: "softmax", transformer.AddOp: "residual",
    transformer.HostOp: "host", transformer.SelectRowsOp: "select_rows",
}
NORM_OPS = (transformer.NormOp,)
PREDICTION_OPS = (spls.HLogQuantizeOp, spls.PredictAttentionOp, spls.TopKOp,
                  spls.LocalSimilarityOp)


@dataclass(frozen=True)
class Stamp:
    """Where an op sits in the model: its layer (NO_LAYER outside) and its role."""

    layer: int
    role: str


def _operand_names(op: Operation) -> frozenset[str]:
    if not isinstance(op, IRDLOperation):
        return frozenset()
    return frozenset(name for name, _ in type(op).get_irdl_definition().operands)


def is_linear(op: Operation) -> bool:
    """A linear in any form (FP32, INT8, masked): an op with `x` and `weight` operands."""
    return {"x", "weight"} <= _operand_names(op)


def is_attention(op: Operation) -> bool:
    """An attention in any form: an op with `q`, `k` and `v` operands."""
    return {"q", "k", "v"} <= _operand_names(op)


def _is_constant(op: Operation) -> bool:
    return isinstance(op, WeightOp) or (isinstance(op, OnnxOperation) and op.op_type == "Constant")


def _is_stop(op: Operation) -> bool:
    """Ops that end a local walk: the GEMMs and the ops on the residual stream."""
    return is_linear(op) or is_attention(op) or isinstance(
        op, (transformer.AddOp, *NORM_OPS))


class _Graph:
    """Producers and users of the ops of one block (constants and nested ops left out)."""

    def __init__(self, block: Block):
        self.ops = [op for op in block.ops if op is not block.last_op and not _is_constant(op)]
        self.position = {op: i for i, op in enumerate(self.ops)}

    def producers(self, op: Operation, operands: Iterable | None = None) -> Iterator[Operation]:
        for value in op.operands if operands is None else operands:
            if isinstance(value, OpResult) and value.op in self.position:
                yield value.op

    def users(self, op: Operation) -> Iterator[Operation]:
        for result in op.results:
            for use in result.uses:
                if use.operation in self.position:
                    yield use.operation

    def reached(self, op: Operation, forward: bool) -> list[Operation]:
        """The stop ops first met walking from `op` through non-stop ops (users if forward)."""
        found: list[Operation] = []
        seen = {op}
        stack = [op]
        while stack:
            step = self.users(stack.pop()) if forward else self.producers(stack.pop())
            for nxt in step:
                if nxt in seen:
                    continue
                seen.add(nxt)
                if _is_stop(nxt):
                    found.append(nxt)
                elif not isinstance(nxt, PREDICTION_OPS):
                    stack.append(nxt)
        return found


def analyse(block: Block) -> dict[Operation, Stamp]:
    """Layer and role of every lifted op of `block` (and layer of every other non-constant op,
    under the role "host"); see the module docstring."""
    graph = _Graph(block)
    attentions = [op for op in graph.ops if is_attention(op)]
    member = _prediction_layers(graph, attentions)
    for n, attention in enumerate(attentions):
        member[attention] = n
        _claim_feeders(graph, attention, n, member)
    upstream = _latest_attention_upstream(graph, attentions)
    outside = set()
    for n, attention in enumerate(attentions):
        exit_op = _layer_exit(graph, attention, n, upstream, member)
        if exit_op is not None:
            outside |= _past_exit(graph, exit_op, n, upstream, member)
    layer = {op: member.get(op, NO_LAYER if op in outside else upstream[op]) for op in graph.ops}
    roles = _linear_roles(graph, layer)
    return {op: Stamp(layer[op], _role(op, roles)) for op in graph.ops}


def _role(op: Operation, linear_roles: dict[Operation, str]) -> str:
    if op in linear_roles:
        return linear_roles[op]
    if is_attention(op):
        return "attention"
    if isinstance(op, PREDICTION_OPS):
        return "predict"
    if isinstance(op, NORM_OPS):
        return "norm"
    return _ROLE_OF_KIND.get(type(op), "host")


def _prediction_layers(graph: _Graph, attentions: list[Operation]) -> dict[Operation, int]:
    """SPLS prediction ops take the layer of the first attention downstream of them."""
    index = {op: n for n, op in enumerate(attentions)}
    layers: dict[Operation, int] = {}
    for op in reversed(graph.ops):
        if isinstance(op, PREDICTION_OPS):
            below = [index.get(u, layers.get(u)) for u in graph.users(op)]
            found = [n for n in below if n is not None]
            if found:
                layers[op] = min(found)
    return layers


def _claim_feeders(graph: _Graph, attention: Operation, n: int,
                   member: dict[Operation, int]) -> None:
    """Give layer n the ops whose every user is already in layer n, walking up from Q, K, V
    (latest first, so an op's users are all decided before it)."""
    heap = [(-graph.position[p], id(p), p) for p in graph.producers(attention, attention.operands[:3])]
    heapq.heapify(heap)
    while heap:
        _, _, op = heapq.heappop(heap)
        if op in member or is_attention(op):
            continue
        users = list(graph.users(op))
        if users and all(member.get(u) == n for u in users):
            member[op] = n
            for p in graph.producers(op):
                heapq.heappush(heap, (-graph.position[p], id(p), p))


def _latest_attention_upstream(graph: _Graph, attentions: list[Operation]) -> dict[Operation, int]:
    index = {op: n for n, op in enumerate(attentions)}
    upstream: dict[Operation, int] = {}
    for op in graph.ops:
        if op in index:
            upstream[op] = index[op]
        else:
            upstream[op] = max((upstream[p] for p in graph.producers(op)), default=NO_LAYER)
    return upstream


def _layer_exit(graph: _Graph, attention: Operation, n: int, upstream: dict[Operation, int],
                member: dict[Operation, int]) -> Operation | None:
    """The last op of layer n's residual stream, or None if the layer has no residual add."""
    def in_layer(op: Operation) -> bool:
        return upstream[op] == n and op not in member

    first_add = None
    for op in graph.ops[graph.position[attention] + 1:]:  # up to the next attention
        if is_attention(op) or (isinstance(op, transformer.AddOp) and in_layer(op)):
            first_add = op if isinstance(op, transformer.AddOp) else None
            break
    if first_add is None:
        return None
    pre_norm = _is_pre_norm(first_add, n, upstream, member)
    stream: Operation = first_add
    while True:
        users = [u for u in graph.users(stream) if in_layer(u)]
        norms = [u for u in users if isinstance(u, NORM_OPS)]
        adds = [u for u in users if isinstance(u, transformer.AddOp)]
        if not pre_norm and len(norms) == 1:
            stream = norms[0]
        elif len(adds) == 1:
            stream = adds[0]
        else:
            return stream


def _is_pre_norm(first_add: Operation, n: int, upstream: dict[Operation, int],
                 member: dict[Operation, int]) -> bool:
    """Pre-LN: the residual the attention's add skips over is normalised on its way into Q, K,
    V (post-LN: Q, K, V read it as it is, and the norms sit on the stream itself)."""
    skips = [v for v in first_add.operands
             if not (isinstance(v, OpResult) and v.op in upstream and upstream[v.op] == n)]
    return any(isinstance(u.operation, NORM_OPS) and member.get(u.operation) == n
               for v in skips for u in v.uses)


def _past_exit(graph: _Graph, exit_op: Operation, n: int, upstream: dict[Operation, int],
               member: dict[Operation, int]) -> set[Operation]:
    """Ops downstream of layer n's exit that no later attention claims: outside every layer."""
    past: set[Operation] = set()
    stack = [exit_op]
    while stack:
        for user in graph.users(stack.pop()):
            if user not in past and upstream[user] == n and user not in member:
                past.add(user)
                stack.append(user)
    return past


def _linear_roles(graph: _Graph, layer: dict[Operation, int]) -> dict[Operation, str]:
    slot: dict[Operation, int] = {}
    """Linear -> the first Q/K/V operand slot of an attention it reaches."""
    for attention in (op for op in graph.ops if is_attention(op)):
        for i, value in enumerate(attention.operands[:3]):
            for found in _stops_above(graph, value):
                slot[found] = min(slot.get(found, i), i)
    feeds_attention = _feeds_attention(graph)
    roles: dict[Operation, str] = {}
    ffn: dict[Operation, list[Operation]] = {}
    """In-layer linears that are not q/k/v/o -> the in-layer linears they reach."""
    for op in (o for o in graph.ops if is_linear(o)):
        if op in slot:
            roles[op] = ("q", "k", "v")[slot[op]]
        elif any(is_attention(p) for p in _stops_above(graph, op.operands[0])):
            roles[op] = "o"
        elif layer[op] == NO_LAYER:
            roles[op] = "proj" if feeds_attention[op] else "head"
        else:
            ffn[op] = [u for u in graph.reached(op, forward=True)
                       if is_linear(u) and layer[u] == layer[op]]
    for op, downs in ffn.items():
        roles[op] = _ffn_role(op, downs, ffn)
    return roles


def _stops_above(graph: _Graph, value: SSAValue) -> list[Operation]:
    """The stop ops `value` comes from: its producer if it is one, else those met walking up."""
    if not isinstance(value, OpResult) or value.op not in graph.position:
        return []
    return [value.op] if _is_stop(value.op) else graph.reached(value.op, forward=False)


def _ffn_role(op: Operation, downs: list[Operation], ffn: dict[Operation, list[Operation]]) -> str:
    if not downs:
        return "ffn_down"
    down = downs[0]
    feeders = [f for f, reached in ffn.items() if down in reached]
    product = down.operands[0].owner
    direct = [f for f in feeders
              if f is product or any(r in product.operands for r in f.results)]  # type: ignore[union-attr]
    gated = len(feeders) > 1 and 0 < len(direct) < len(feeders)
    return "ffn_gate" if gated and op not in direct else "ffn_up"


def _feeds_attention(graph: _Graph) -> dict[Operation, bool]:
    feeds: dict[Operation, bool] = {}
    for op in reversed(graph.ops):
        feeds[op] = any(is_attention(u) or feeds[u] for u in graph.users(op))
    return feeds


# --- stamps in the IR -----------------------------------------------------------------------
def stamp(op: Operation, where: Stamp) -> None:
    op.attributes[LAYER_ATTR] = IntegerAttr(where.layer, i64)
    op.attributes[ROLE_ATTR] = StringAttr(where.role)


def stamp_block(block: Block, stamps: dict[Operation, Stamp] | None = None) -> None:
    """Stamp every lifted op of `block` (transformer ops, host regions) with its layer and role
    (`stamps` from `analyse` before the host regions were made: a region takes its members'
    layer when they agree, else NO_LAYER)."""
    stamps = analyse(block) if stamps is None else stamps
    for op in block.ops:
        if isinstance(op, transformer.HostOp) and op not in stamps:
            layers = {stamps[m].layer for m in op.body.block.ops if m in stamps}
            stamp(op, Stamp(layers.pop() if len(layers) == 1 else NO_LAYER, "host"))
        elif op in stamps and op.dialect_name() != "onnx":
            stamp(op, stamps[op])


def read_stamp(op: Operation) -> Stamp | None:
    """The op's stamp, None if it has none; a malformed one is a CompileError."""
    layer, role = op.attributes.get(LAYER_ATTR), op.attributes.get(ROLE_ATTR)
    if layer is None and role is None:
        return None
    if not (isinstance(layer, IntegerAttr) and isinstance(role, StringAttr)
            and role.data in ROLES and layer.value.data >= NO_LAYER):
        raise CompileError(f"{op_label(op)}: bad layer/role stamp (layer {layer}, role {role}): "
                           f"layer is an i64 >= -1 and role one of {', '.join(ROLES)}")
    return Stamp(layer.value.data, role.data)


def layers_and_roles(function: func.FuncOp) -> dict[Operation, Stamp]:
    """Layer and role of every op of the function's body: the stamps when the IR has them
    (from lift-transformer), else derived by `analyse` (IR written by hand)."""
    block = function.body.block
    stamped = {op: s for op in block.ops if (s := read_stamp(op)) is not None}
    if not stamped:
        return analyse(block)
    derived = analyse(block)
    return {op: stamped.get(op, derived[op]) for op in derived}


def component_of(stamp_: Stamp) -> str:
    """A linear's debug-map component."""
    return COMPONENT_OF_ROLE[stamp_.role]
