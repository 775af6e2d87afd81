"""Masked attention's score path charged per kept position (docs/hardware.md "Sparse attention
unit"; docs/design.md section 9.3).

A masked ATTN_QK computes only the (query, key) positions its element mask keeps; the score tile
then flows through SFU instructions (DEQUANT, the additive mask ADD, SOFTMAX or its online form,
QUANT or QUANT_ROWS) to the masked ATTN_PV. The functional model records each of those over the
whole rows x cols tile, which is what a dense datapath does. A sparse attention unit (Sanger's
pack-and-split, SPLS's top-k attention, SpAtten's pruned tokens and heads) keeps the selected
scores packed and never reads, writes or evaluates the others, so here each instruction on that
path is charged for the kept positions only: SFU elements = kept, and each of its tile-shaped
SRAM operands (scores, probabilities, the additive mask tile) moves kept x element bytes. The
masks themselves (MBUF) are still read whole, as the unit must read them to find the kept
positions, and DRAM traffic is unchanged.

The path is followed through the buffers in program order: a masked ATTN_QK's score tile
(buffer, first element, rows, cols) carries its kept count; a score-path instruction reading a
carried tile of its own shape carries the count on to its destination; a masked ATTN_PV reading
a carried P tile is charged for its kept probabilities; any write overlapping a carried tile
(or a HOST instruction) ends it. An instruction not reached this
way keeps its dense charge (never under-charged by a guess).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .isa_fields import BUFFER_DTYPES, Buffer
from .isa_footprint import operand_extent
from .isa_spec import Operand

SCORE_PATH_SOURCE: dict[str, str] = {
    "dequant": "src_addr", "add": "a_addr", "softmax": "src_addr", "quant": "src_addr",
    "quant_rows": "src_addr", "softmax_stats": "src_addr", "softmax_norm": "src_addr"}
"""SFU instructions a score tile flows through, by the address field of their score input."""

Tile = tuple[int, int, int, int]  # rows, cols, kept positions, one past the last element
Key = tuple[Buffer, int]  # buffer, first element


def _key(instr: Any, op: Operand) -> Key | None:
    extent = operand_extent(instr, op)
    if extent is None or extent[0] is None:
        return None
    return extent[0], extent[1]


def _operand(instr: Any, addr: str, access: str) -> Operand | None:
    for op in instr.spec.operands:
        if op.addr == addr and op.access == access and operand_extent(instr, op) is not None:
            return op
    return None


def _shape(instr: Any, op: Operand) -> tuple[int, int]:
    return op.rows(instr.fields), op.cols(instr.fields)


def _uncharge(work: Any, instr: Any, op: Operand, dropped: int) -> None:
    """Take `dropped` elements of operand `op` off the instruction's SRAM bytes."""
    buffer = operand_extent(instr, op)[0]
    counter = work.sram_read_bytes if op.access == "r" else work.sram_write_bytes
    name = buffer.name.lower()
    counter[name] = counter.get(name, 0) - dropped * BUFFER_DTYPES[buffer].itemsize


def _touched_rows(work: Any, rows: int) -> int:
    """Rows of a `rows`-row tile the functional model charged: a row mask's kept rows
    (Machine.view), else all."""
    return work.rows_executed if work.rows_total else rows


def charge_tile_operands(work: Any, instr: Any, tile: Tile) -> None:
    """A score-path SFU instruction over `tile`: SFU elements and every tile-shaped operand
    outside MBUF charged for the kept positions only (of kept rows: the tile's count is
    over the attention's kept rows, as is a row-masked step's charge)."""
    rows, cols, kept, _ = tile
    dropped = _touched_rows(work, rows) * cols - kept
    work.sfu_elements = min(work.sfu_elements, kept)
    for op in instr.spec.operands:
        extent = operand_extent(instr, op)
        if extent is None or extent[0] in (None, Buffer.MBUF):
            continue
        if _shape(instr, op) == (rows, cols):
            _uncharge(work, instr, op, dropped)


def _carry(instr: Any, op: Operand, rows: int, cols: int, kept: int,
           tiles: dict[Key, Tile]) -> None:
    buffer, start, end = operand_extent(instr, op)
    tiles[(buffer, start)] = (rows, cols, kept, end)


def _masked_qk(instr: Any, work: Any, tiles: dict[Key, Tile]) -> None:
    _end_overwritten(instr, tiles)
    op = _operand(instr, "scores_addr", "w")
    if op is None or not instr.fields["has_mask"] or _key(instr, op) is None:
        return
    rows, cols = _shape(instr, op)
    kept = int(work.mask_kept)
    _uncharge(work, instr, op, _touched_rows(work, rows) * cols - kept)
    _carry(instr, op, rows, cols, kept, tiles)


def _score_path(instr: Any, work: Any, tiles: dict[Key, Tile]) -> bool:
    """Charge a score-path SFU instruction if it reads a carried tile; True if it did."""
    source = _operand(instr, SCORE_PATH_SOURCE[instr.opcode_name], "r")
    key = None if source is None else _key(instr, source)
    tile = tiles.get(key) if key is not None else None
    if tile is None or _shape(instr, source) != tile[:2]:
        return False
    charge_tile_operands(work, instr, tile)
    _end_overwritten(instr, tiles)  # an in-place step ends the tile, then carries it on
    destination = _operand(instr, "dst_addr", "w")
    if destination is not None and _shape(instr, destination) == tile[:2]:
        _carry(instr, destination, *tile[:3], tiles)
    return True


def _masked_pv(instr: Any, work: Any, tiles: dict[Key, Tile]) -> None:
    op = _operand(instr, "p_addr", "r")
    key = None if op is None else _key(instr, op)
    tile = tiles.get(key) if key is not None else None
    if tile is not None and instr.fields["has_mask"] and _shape(instr, op) == tile[:2]:
        _uncharge(work, instr, op, _touched_rows(work, tile[0]) * tile[1] - tile[2])
    _end_overwritten(instr, tiles)


def _end_overwritten(instr: Any, tiles: dict[Key, Tile]) -> None:
    """Forget every carried tile an operand the instruction writes overlaps."""
    for op in instr.spec.operands:
        extent = operand_extent(instr, op) if op.access == "w" else None
        if extent is None or extent[0] is None:
            continue
        buffer, start, end = extent
        for key in [k for k, t in tiles.items() if k[0] is buffer and k[1] < end
                    and start < t[3]]:
            del tiles[key]


def charge_kept_scores(instructions: Sequence[Any], works: Sequence[Any]) -> None:
    """Rewrite, in place, the work records of each masked attention's score path so that they
    count the kept positions only (module docstring)."""
    tiles: dict[Key, Tile] = {}
    for instr, work in zip(instructions, works, strict=True):
        name = instr.opcode_name
        if name == "host":  # touches memory the table does not spell out
            tiles.clear()
        elif name == "attn_qk":
            _masked_qk(instr, work, tiles)
        elif name in SCORE_PATH_SOURCE and tiles and _score_path(instr, work, tiles):
            continue
        elif name == "attn_pv" and tiles:
            _masked_pv(instr, work, tiles)
        elif tiles:
            _end_overwritten(instr, tiles)
