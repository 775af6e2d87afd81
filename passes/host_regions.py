"""Grouping of the ops the accelerator does not run into `transformer.host` regions.

After lifting, every op of a function body is one of: a `transformer` op (accelerator), a
constant (`onnx.weight` / `onnx.Constant`), the terminator, or host work (every other op).
Host ops are grouped into maximal connected regions that can each run as one onnxruntime
subgraph without a cycle through the accelerator:

- every op gets a stage: the largest number of host <-> accelerator switches on any path from
  the function arguments to it;
- host ops joined by a def-use edge and sharing a stage form one region (union-find).

Two members of a region cannot be joined by a path through the accelerator (that path would
switch kinds at least twice, so their stages would differ), so the regions and the
accelerator ops form a DAG; the body is re-emitted in a stable topological order.
Constants a region reads are cloned into it (regions are isolated from above).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from esact_cc.dialects.onnx import OnnxOperation, WeightOp
from esact_cc.dialects.transformer import HostOp, YieldOp
from esact_cc.passes.lift_transformer_graph import is_unused
from xdsl.dialects import func
from xdsl.ir import Block, Operation, OpResult, SSAValue


def _is_constant(op: Operation) -> bool:
    return isinstance(op, WeightOp) or (isinstance(op, OnnxOperation) and op.op_type == "Constant")


def _is_host(op: Operation) -> bool:
    return isinstance(op, OnnxOperation) and not _is_constant(op)


def _producer_in(block: Block, value: SSAValue) -> Operation | None:
    if isinstance(value, OpResult) and value.op.parent_block() is block:
        return value.op
    return None


class _UnionFind:
    """Disjoint sets of ops; union by size and path compression keep it near-linear."""

    def __init__(self) -> None:
        self.parent: dict[Operation, Operation] = {}
        self.size: dict[Operation, int] = {}

    def find(self, op: Operation) -> Operation:
        if op not in self.parent:
            self.parent[op] = op
            self.size[op] = 1
            return op
        root = op
        while root is not self.parent[root]:
            root = self.parent[root]
        while op is not root:
            next_op = self.parent[op]
            self.parent[op] = root
            op = next_op
        return root

    def union(self, a: Operation, b: Operation) -> None:
        a, b = self.find(a), self.find(b)
        if a is b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


def _stages(ops: Sequence[Operation], block: Block) -> dict[Operation, int]:
    stage: dict[Operation, int] = {}
    for op in ops:
        if _is_constant(op):
            continue
        best = 0
        for operand in op.operands:
            producer = _producer_in(block, operand)
            if producer is None or producer not in stage:
                continue
            best = max(best, stage[producer] + (_is_host(producer) != _is_host(op)))
        stage[op] = best
    return stage


def group_host_regions(function: func.FuncOp) -> list[HostOp]:
    """Wrap the function's host ops into `transformer.host` regions; returns the regions."""
    block = function.body.block
    ops = [op for op in block.ops if op is not block.last_op]
    stage = _stages(ops, block)
    groups = _UnionFind()
    host_ops = [op for op in ops if _is_host(op)]
    for op in host_ops:
        groups.find(op)
        for operand in op.operands:
            producer = _producer_in(block, operand)
            if producer is not None and _is_host(producer) and stage[producer] == stage[op]:
                groups.union(producer, op)
    members: dict[Operation, list[Operation]] = {}
    for op in host_ops:
        members.setdefault(groups.find(op), []).append(op)
    order = {op: index for index, op in enumerate(block.ops)}
    regions = [_wrap(group, block) for group in members.values()]
    _topological_reorder(block, order, regions, members)
    _erase_unused_constants(block)
    return regions


def _wrap(group: list[Operation], block: Block) -> HostOp:
    """Move `group` (in block order) into a new host region placed before its first member."""
    member_set = set(group)
    inputs: list[SSAValue] = []
    constants: list[Operation] = []
    for op in group:
        for operand in op.operands:
            producer = operand.op if isinstance(operand, OpResult) else None
            if producer in member_set:
                continue
            if producer is not None and _is_constant(producer):
                if producer not in constants:
                    constants.append(producer)
            elif operand not in inputs:
                inputs.append(operand)
    outputs = [
        result
        for op in group
        for result in op.results
        if any(use.operation not in member_set for use in result.uses)
    ]
    body = HostOp.empty_body([v.type for v in inputs])
    inner = body.block
    mapping: dict[SSAValue, SSAValue] = dict(zip(inputs, inner.args, strict=True))
    for constant in constants:
        clone = constant.clone()
        inner.add_op(clone)
        mapping[constant.results[0]] = clone.results[0]
    host = HostOp(inputs, [r.type for r in outputs], body)
    host.location = group[0].location
    block.insert_op_before(host, group[0])
    for result, replacement in zip(outputs, host.outputs, strict=True):
        result.replace_uses_with_if(replacement, lambda use: use.operation not in member_set)
    for op in group:
        op.detach()
        for index, operand in enumerate(op.operands):
            if operand in mapping:
                op.operands[index] = mapping[operand]
        inner.add_op(op)
    inner.add_op(YieldOp(outputs))
    return host


def _topological_reorder(
    block: Block,
    order: dict[Operation, int],
    regions: list[HostOp],
    members: dict[Operation, list[Operation]],
) -> None:
    """Re-emit the block's ops so every value is defined before use, else in original order."""
    terminator = block.last_op
    assert terminator is not None
    ops = [op for op in block.ops if op is not terminator]
    # A region's priority is its first member's original position.
    first_member = {
        region: min(order[m] for m in group)
        for region, group in zip(regions, members.values(), strict=True)
    }
    priority = {op: first_member.get(op, order.get(op, len(order))) for op in ops}  # type: ignore[arg-type]
    op_set = set(ops)
    pending: dict[Operation, int] = {}
    users: dict[Operation, list[Operation]] = {op: [] for op in ops}
    for op in ops:
        producers = {o.op for o in op.operands if isinstance(o, OpResult) and o.op in op_set}
        pending[op] = len(producers)
        for producer in producers:
            users[producer].append(op)
    ready = [(priority[op], index, op) for index, op in enumerate(ops) if pending[op] == 0]
    heapq.heapify(ready)
    sorted_ops: list[Operation] = []
    tie = len(ops)
    while ready:
        _, _, op = heapq.heappop(ready)
        sorted_ops.append(op)
        for user in users[op]:
            pending[user] -= 1
            if pending[user] == 0:
                tie += 1
                heapq.heappush(ready, (priority[user], tie, user))
    assert len(sorted_ops) == len(ops), "host grouping created a cycle"
    if all(a is b for a, b in zip(sorted_ops, ops)):
        return  # already in order: moving every op of a big block is not free
    for op in ops:
        op.detach()
    for op in sorted_ops:
        block.insert_op_before(op, terminator)


def _erase_unused_constants(block: Block) -> None:
    for op in reversed(list(block.ops)):
        if _is_constant(op) and is_unused(op):
            block.erase_op(op)
