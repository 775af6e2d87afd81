"""Query tiles of an attention whose SPA rows are spilled to DRAM (passes/lower_attention.py
`_tile_fits`): two heads' SPA tiles are in flight in the MBUF ring, so the plan must hold them
in one free run of MBUF, not in its free total: live masks can split the free MBUF into runs
none of which holds a tile, although together they hold three."""

from __future__ import annotations

from esact_cc.passes.lower_attention import _tile_fits
from esact_cc.passes.lowering_state import Lowering, MaskTiles, registered_lowerings
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer
from esact_cc.weight_store import WeightStore
from xdsl.dialects.builtin import ModuleOp

LENGTH, HEAD_WIDTH, HEADS = 256, 64, 12
RUNS = 8


def _fragmented_lowering() -> Lowering:
    """A lowering state whose MBUF holds one live byte after each of RUNS equal free runs."""
    lw = Lowering(ModuleOp([]), WeightStore(), load_config(), registered_lowerings())
    ring = lw.rings[Buffer.MBUF]
    run = ring.capacity // RUNS - 1
    gaps = []
    for _ in range(RUNS):
        gaps.append(ring.alloc(run))
        ring.alloc(1)
    for start in gaps:
        ring.release(start)
    return lw


def _heads_in_flight(lw: Lowering, tile: int) -> None:
    """The SPA tiles' MBUF life in `lower_attention`: head h + 1's tile is taken before head
    h's is released (QK of the next head runs before PV of this one)."""
    ring, live = lw.rings[Buffer.MBUF], []
    for _ in range(HEADS):
        live.append(ring.alloc(tile))
        if len(live) == 2:
            ring.release(live.pop(0))
    for start in live:
        ring.release(start)


def test_spilled_spa_tiles_are_planned_in_one_free_run() -> None:
    lw = _fragmented_lowering()
    spilled = MaskTiles(batch=1, length=LENGTH, heads=HEADS)  # no SPA on chip: LOADed per tile
    run, free_total = lw.room(Buffer.MBUF), lw.capacity(Buffer.MBUF) - RUNS
    assert 3 * 64 * LENGTH <= free_total and 64 * LENGTH > run  # the free total would pass
    fitting = [tq for tq in range(1, LENGTH + 1)
               if _tile_fits(lw, tq, LENGTH, LENGTH, HEAD_WIDTH, HEAD_WIDTH, spilled)]
    largest = max(fitting)
    _heads_in_flight(lw, largest * LENGTH)  # raises CompileError when the plan does not fit
    assert largest == run // (3 * LENGTH)
    assert lw.room(Buffer.MBUF) == run  # every tile released: the layout is as before


def test_one_free_run_keeps_the_whole_free_mbuf_plan() -> None:
    """Without fragmentation the plan is the one the free total gave (3 tiles in the run)."""
    lw = Lowering(ModuleOp([]), WeightStore(), load_config(), registered_lowerings())
    spilled = MaskTiles(batch=1, length=LENGTH, heads=HEADS)
    capacity = lw.capacity(Buffer.MBUF)
    fitting = [tq for tq in range(1, LENGTH + 1)
               if _tile_fits(lw, tq, LENGTH, LENGTH, HEAD_WIDTH, HEAD_WIDTH, spilled)]
    assert max(fitting) == capacity // (3 * LENGTH)
    _heads_in_flight(lw, max(fitting) * LENGTH)
