"""Where the linears lowered beside an SPLS prediction go in the program: the placement
policies of the ordering step (`passes/order_instructions.py` runs them at the directives
`passes/lower_spls_to_esact.py` leaves in the selection stream).

The K / V linears of the prediction's input (`attention=dense`) do not depend on it, and the
masked Q linear needs only one prediction chunk per GEMM: lowered beside the chain (a group
held aside, `Lowering.lower_aside`) and placed among its instructions, the compute queue runs
them while the BPU predicts. Every move is checked against `isa.footprint` on the allocated
program (the analysis `schedule` derives tokens from): nothing moves past an instruction it
shares a region with, one of them writing, so program-order semantics hold.
"""

from __future__ import annotations

from collections.abc import Callable

from esact_cc.dialects.lowering import CYCLES_ATTR, GROUP_ATTR
from esact_cc.runtime.hw_config import HardwareConfig
from esact_cc.runtime.isa import Buffer, Footprint, footprint
from xdsl.ir import Operation


def interleave(program: list[Operation], emitted: set[int], body: list[Operation],
               config: HardwareConfig) -> list[Operation]:
    """Spread `body` (the K / V linears) over the prediction instructions of `program`
    selected since `emitted` (ids of the instructions before them; some loads were hoisted
    among those).

    The body is cut after each GEMM. With estimated cycles for the BPU anchors (BPU, cycles)
    and the GEMMs, GEMM g goes just before the anchor running when GEMM g - 1 is expected to
    end, its input LOADs one per anchor up to that one (`_spread`), and GEMM g - 1's
    epilogue (DEQUANT, STORE) one anchor later: the in-order load queue then issues each
    GEMM's loads about when the compute queue can use them, a prediction load between two
    of them (not behind every prediction load, nor so early that a load waiting for a weight
    bank holds the BPU's code loads), and an epilogue waiting for its GEMM does
    not hold the in-order SFU queue in front of the prediction's DEQUANTs. Everything stays
    after the prediction when a body instruction and a prediction instruction touch a common
    region (one writing); an epilogue stays in front of the next loads when they share one.
    Returns the pieces placed after the last anchor (for `sink`)."""
    if not body:
        return []
    segment = [ins for ins in program if id(ins) not in emitted]
    # LOADs of the body hoisted into the segment (`hoist`: a linear's first weight tile) go
    # back to its front: its GEMMs must not be placed before them.
    group = body[0].attributes.get(GROUP_ATTR)
    hoisted = {id(ins) for ins in segment if group is not None
               and ins.attributes.get(GROUP_ATTR) == group}
    if hoisted:
        body = [ins for ins in segment if id(ins) in hoisted] + body
        segment = [ins for ins in segment if id(ins) not in hoisted]
        program[:] = [ins for ins in program if id(ins) not in hoisted]
    if not segment or conflicting(body, segment):
        program.extend(body)
        return []
    anchors = [(ins, ins.attributes[CYCLES_ATTR].value.data)  # type: ignore[attr-defined]
               for ins in segment if CYCLES_ATTR in ins.attributes]
    placed = _placements(config, body, anchors)
    before: dict[int, list[Operation]] = {}
    after: list[Operation] = []
    for at, group in placed:
        (after if at is None else before.setdefault(id(anchors[at][0]), [])).extend(group)
    merged: list[Operation] = []
    last = segment[-1]
    for ins in program:
        merged.extend(before.pop(id(ins), ()))
        merged.append(ins)
        if ins is last:
            merged.extend(after)
    assert not before
    program[:] = merged
    return after


def _placements(config: HardwareConfig, body: list[Operation],
                anchors: list[tuple[Operation, int]]) -> list[tuple[int | None, list[Operation]]]:
    """(anchor index or None for after the last anchor, instructions to place before it) of
    each piece of `body` (see `interleave`)."""
    pieces: list[list[Operation]] = [[]]
    for ins in body:
        pieces[-1].append(ins)
        if ins.name in MAC_WORK:
            pieces.append([])
    starts, t = [], 0
    for _, cycles in anchors:
        starts.append(t)
        t += cycles

    def anchor_at(time: int) -> int | None:
        """The first anchor still running at `time` (None: after the last one)."""
        return next((i for i, s0 in enumerate(starts) if s0 + anchors[i][1] > time), None)

    placed: list[tuple[int | None, list[Operation]]] = []
    deferred: int | None = None  # index in `placed` of an epilogue moved one anchor later
    ready = 0  # estimated end of the previous GEMM
    floor = 0  # the previous piece's anchor: nothing of this one goes before it
    slack = _may_run_later(body)
    for piece in pieces:
        loads = [ins for ins in piece if ins.name == "esact.load"]
        rest = [ins for ins in piece if ins.name != "esact.load"]
        epilogue = [ins for ins in rest if ins.name not in MAC_WORK]
        gemm = [ins for ins in rest if ins.name in MAC_WORK]
        at = anchor_at(ready)
        if deferred is not None and _sooner(at, placed[deferred][0]) \
                and conflicting(placed[deferred][1], piece):
            # This piece would go in front of the deferred epilogue it conflicts with (e.g. a
            # GEMM reusing the ACC tile the epilogue reads): the epilogue stays before it.
            placed.append((at, placed.pop(deferred)[1]))
        deferred = None
        floor = _floor(placed, floor, piece)
        # A linear's epilogue (the previous GEMM's DEQUANT / STORE) may trail its next GEMM;
        # an attention's SFU steps feed its next MAC instruction: its pieces stay whole.
        if epilogue and gemm and gemm[0].name == "esact.gemm" \
                and not conflicting(epilogue, loads + gemm):
            later = anchor_at(ready) if at is None else (at + 1 if at + 1 < len(anchors) else None)
            placed.append((later, epilogue))
            deferred = len(placed) - 1
            placed.extend(_spread(loads + gemm, at, floor, len(anchors), slack))
        else:
            placed.extend(_spread(piece, at, floor, len(anchors), slack))
            at = placed[-1][0]  # its GEMM's anchor
        if at is not None:
            floor = at
        if gemm:
            start = starts[at] if at is not None else t
            ready = max(ready, start) + _mac_cycles(gemm[0], config)
    return placed


def _may_run_later(body: list[Operation]) -> bool:
    """May the body's GEMMs run later than expected? Not when an attention of the body reads
    them (a dense attention beside the projection): it would wait for them."""
    return not any(ins.name in ("esact.attn_qk", "esact.attn_pv") for ins in body)


def _floor(placed: list[tuple[int | None, list[Operation]]], floor: int,
           piece: list[Operation]) -> int:
    """`floor` raised to the anchor of a deferred epilogue (the only groups placed after the
    previous piece's anchor) that `piece` shares a region with: nothing of it goes in front."""
    return max([floor, *(anchor for anchor, group in placed if anchor is not None
                         and anchor > floor and conflicting(group, piece))])


def _spread(piece: list[Operation], at: int | None, floor: int, count: int,
            later: bool) -> list[tuple[int | None, list[Operation]]]:
    """The placements of `piece` (its GEMM expected before anchor `at` of `count`), cut before
    its input LOADs, one cut per anchor, so the in-order load queue serves a prediction load
    between two of them, not after all of them (BERT-base 512: a K tile's five input LOADs
    and its weights, 13.6k cycles, held the next BPU's code LOAD): its input preparation
    (LOADs, QUANT_ROWS before its first other instruction) over the anchors up to `at`, none
    before `floor` (the previous piece's anchor, or a deferred epilogue it shares a region
    with); when that preparation must follow the piece's other instructions (an epilogue
    sharing a region with it) and the GEMM may run `later` (no attention in the body reads
    it: K / V wait for the attention after the score path), the LOADs after them over the
    anchors from `at` on, the GEMM after the last (with a dense attention beside the
    projection, BERT-base 128 dense-prefix, that cost 4%). An
    epilogue is never moved earlier: it would wait for its GEMM in front of the prediction's
    DEQUANTs in the in-order SFU queue."""
    if at is None:
        return [(at, piece)]
    preparation = [ins for ins in piece[:-1] if ins.name in PREPARATION]
    others = [k for k, ins in enumerate(piece[:-1]) if ins.name not in PREPARATION]
    if others and piece[-1].name == "esact.gemm" \
            and not conflicting([piece[k] for k in others], preparation):
        piece = preparation + [piece[k] for k in others] + piece[-1:]
        others = list(range(len(preparation), len(piece) - 1))
    prefix = others[0] if others else len(piece) - 1
    cuts = [k for k in range(1, prefix + 1) if piece[k].name == "esact.load"]
    first, last = max(floor, at - len(cuts)), max(floor, at)
    if not cuts and others and piece[-1].name == "esact.gemm" and later:
        cuts = [k for k in range(others[-1] + 1, len(piece) - 1) if piece[k].name == "esact.load"]
        first, last = last, count - 1
    bounds = [0, *cuts, len(piece)]
    return [(min(first + j, last), piece[bounds[j]:bounds[j + 1]]) for j in range(len(cuts) + 1)]


PREPARATION = {"esact.load", "esact.quant_rows"}
"""What a piece's input preparation (before its other instructions) consists of."""

MAC_WORK = {"esact.gemm": ("m", "n", "k"), "esact.attn_qk": ("lq", "lk", "d"),
            "esact.attn_pv": ("lq", "d", "lk")}
"""MAC-array instructions the body is cut after, with their (rows, columns, depth) fields:
a dense attention lowered beside the projection (`dense-prefix=attention`) is spread by head
like the linears by GEMM, so its heads expected after the projection go with the late pieces."""


def _mac_cycles(op: Operation, config: HardwareConfig) -> int:
    """Estimated array cycles of a MAC_WORK instruction: one pass per rows x columns tile per
    unit of depth."""
    instr = op.to_instruction()  # type: ignore[attr-defined]
    rows, cols, depth = (instr[f] for f in MAC_WORK[op.name])
    return -(-rows // config.mac_rows) * -(-cols // config.mac_cols) * depth


def _sooner(anchor: int | None, other: int | None) -> bool:
    """Is a piece placed at `anchor` placed before one at `other` (None: after every anchor)?"""
    return other is None and anchor is not None or (
        anchor is not None and other is not None and anchor < other)


def hoist_preparation(program: list[Operation], body: list[Operation], target: Operation) -> None:
    """Move the instructions of `body` (in the program) before its first GEMM, the input
    tile's LOAD / QUANT that do not depend on the prediction, to just before `target` (the
    chain's first instruction), each one that shares no region (one writing) with what it
    passes: the in-order load and SFU queues then prepare Q's input while the BPU works,
    not after the chain's last SOFTMAX and the K / V loads. Weight loads stay (they wait
    for a WBUF bank, and `hoist_last` placed them already)."""
    prefix = []
    for ins in body:
        if ins.name == "esact.gemm":
            break
        prefix.append(ins)
    start = next(k for k, ins in enumerate(program) if ins is target)
    first = next(k for k, ins in enumerate(program) if ins is prefix[0]) if prefix else None
    if first is None:
        return
    passed = program[start:first]
    moved: list[Operation] = []
    stay: list[Operation] = []
    for ins in prefix:
        wbuf = any(b is Buffer.WBUF for b, _, _ in _footprint_of(ins).writes)
        if not wbuf and not conflicting([ins], passed + stay):
            moved.append(ins)
        else:
            stay.append(ins)
    if not moved:
        return
    ids = {id(ins) for ins in moved}
    rest = [ins for ins in program[start:] if id(ins) not in ids]
    program[start:] = moved + rest


def chunk_major(program: list[Operation], body: list[Operation]) -> None:
    """Interleave the column tiles of the masked Q linear (`body`, in the program) by row
    chunk: tile t's LOADs (weights, DEQUANT vectors) move in front of tile t - 1's first GEMM,
    and its GEMM j to just after tile t - 1's GEMM j, each only past instructions it shares no
    region with (one writing); the first that cannot move stops the rest. The in-order compute
    queue then runs every column tile of chunk c once SIMILARITY c is done, instead of tile t's
    GEMMs after the last chunk (its weights are in the other WBUF bank, its ACC tile in the
    other ACC bank). Moving those LOADs in front of the whole chain measured slower (BERT-base
    128: 1.453M against 1.449M cycles): in the in-order load queue they wait for their bank.
    """
    runs: list[list[Operation]] = []
    between: list[list[Operation]] = [[]]  # body instructions before each run
    for ins in body:
        if ins.name == "esact.gemm":
            if not between[-1] and runs:
                runs[-1].append(ins)
                continue
            runs.append([ins])
            between.append([])
        else:
            between[-1].append(ins)
    if len(runs) < 2 or len({len(run) for run in runs}) != 1:
        return
    for t in range(1, len(runs)):
        for load in [ins for ins in between[t] if ins.name == "esact.load"]:
            if not _move_before(program, load, runs[t - 1][0]):
                return
        for j, gemm in enumerate(runs[t]):
            if not _move_after(program, gemm, runs[t - 1][j]):
                return


def _move_before(program: list[Operation], ins: Operation, anchor: Operation) -> bool:
    """Move `ins` to just before `anchor` (earlier in `program`) unless it shares a region
    (one writing) with an instruction between them; returns whether it moved."""
    at, k = _index(program, anchor), _index(program, ins)
    if conflicting([ins], program[at:k]):
        return False
    program.insert(at, program.pop(k))
    return True


def _move_after(program: list[Operation], ins: Operation, anchor: Operation) -> bool:
    """Move `ins` to just after `anchor` (earlier in `program`), as `_move_before`."""
    at, k = _index(program, anchor) + 1, _index(program, ins)
    if conflicting([ins], program[at:k]):
        return False
    program.insert(at, program.pop(k))
    return True


def _index(program: list[Operation], ins: Operation) -> int:
    return next(k for k, op in enumerate(program) if op is ins)


def move_early(program: list[Operation], body: list[Operation], target: Operation | None) -> None:
    """Move each instruction of `body` (in the program, in order) back toward `target` (None:
    the program's start), just past the last instruction it shares a region with (one
    writing; a HOST touches all memory), and never in front of the previous one of `body`: a chunk's per-query mask rows
    (`lower_spls_to_esact`) then enter the in-order load queue before the loads of the work
    lowered beside the projection, which wait for the MAC array."""
    floor = 0 if target is None else _index(program, target)
    for ins in body:
        k = _index(program, ins)
        at = _earliest(program, k, floor, _footprint_of)
        program.insert(at, program.pop(k))
        floor = at + 1


def _earliest(program: list[Operation], k: int, floor: int,
              print_of: Callable[[Operation], Footprint]) -> int:
    """The earliest index at or after `floor` that program[k] can move back to: nothing
    between shares a region with it (one writing)."""
    mine = print_of(program[k])
    at = k
    while at > floor and not _conflict(mine, print_of(program[at - 1])):
        at -= 1
    return at


def follow(program: list[Operation], body: list[Operation], target: Operation | None) -> None:
    """Move each instruction of `body` (in the program, in order) back toward `target` (None:
    the program's start) as far as nothing it passes shares a region with it (one writing),
    then forward to just after the next SIMILARITY (one chunk later), never in front of the
    previous one of `body`: it follows what it depends on, and its SFU work queues behind
    that chunk's projection DEQUANTs in the in-order SFU queue, not in front of them. With no
    SIMILARITY after it (the last chunk's group) it stays where it can first go, so group g's
    attention precedes group g + 1's Q GEMMs in the in-order compute queue. The masked Q
    linear and the attention, lowered beside a projection emitted by groups of batch elements
    (`WholeProjection.group`), so go among the chain's chunks: the MAC array runs group g's
    attention while the BPU projects group g + 1, instead of every attention after the last
    chunk (digits ViT at batch 2, with Q's tiles per group, `chained_q_acc`: 18,116 ->
    17,655 cycles)."""
    floor = 0 if target is None else _index(program, target)
    prints = {id(ins): _footprint_of(ins) for ins in program[floor:]}
    previous = floor - 1
    for ins in body:
        k = _index(program, ins)
        at = _earliest(program, k, floor, lambda op: prints[id(op)])
        lag = next((j + 1 for j in range(at, k) if program[j].name == "esact.similarity"), at)
        at = max(lag, previous + 1)
        if at < k:
            program.insert(at, program.pop(k))
        previous = min(at, k)


def sink(program: list[Operation], late: list[Operation]) -> None:
    """Move `late` (in their order) to the end of the program when they share no region with
    an instruction they pass (one writing): the K / V pieces expected after the projection,
    whose epilogues would otherwise hold the in-order SFU queue (and their loads the load
    queue) in front of the progressive prediction while they wait for their GEMMs."""
    if not late:
        return
    ids = {id(ins) for ins in late}
    first = next(k for k, ins in enumerate(program) if id(ins) in ids)
    passed = [ins for ins in program[first:] if id(ins) not in ids]
    if not conflicting(late, passed):
        program[first:] = passed + [ins for ins in program[first:] if id(ins) in ids]


def _footprint_of(op: Operation) -> Footprint:
    return footprint(op.to_instruction())  # type: ignore[attr-defined]


def _conflict(a: Footprint, b: Footprint) -> bool:
    """Must the two keep their order? A common region, one of them writing, or either a HOST /
    HALT (`everything`: their effects are not spelled out as operands)."""
    return a.everything or b.everything or a.conflicts(b)


def conflicting(a: list[Operation], b: list[Operation]) -> bool:
    """Does an instruction of `a` and one of `b` have to keep its order (`_conflict`)?"""
    prints_a, prints_b = [_footprint_of(op) for op in a], [_footprint_of(op) for op in b]
    return any(_conflict(fa, fb) for fa in prints_a for fb in prints_b)
