"""Activations kept on chip between ops (`keep-on-chip`, an option of esact-select-instructions
and lower-to-esact; docs/design.md section 4.1).

Without it every op's FP32 result goes to DRAM (STORE) and its readers LOAD it back. With it, a
result the producer computes as ONE VBUF tile (the whole tensor, row-major packed) stays in
that tile, a `Resident`, and readers that can read VBUF directly (QUANT / QUANT_ROWS of a linear
or attention input, the row-wise SFU ops, a linear's fused residual ADD) read it there: no
STORE, no LOAD, no DMA latency. The tile is released after the last op reading the value.

Capacity: residents together hold at most 1 / KEEP_FRACTION of VBUF; a result that would pass
that, or that its producer writes in several tiles, goes through DRAM as before ("spilled",
with the reason, in the compile summary). When a tile of a later op does not fit VBUF beside
the residents, the oldest residents the op is not reading are evicted. A resident that some
reader needs in DRAM (a host segment, an output, an op lowered out of program order for the
SPLS prediction, any rule that asks for the DRAM tensor) is written there by a STORE placed
right after its producer's last instruction (attribute `lowering.spill` names the reason), so
every reader sees the same bytes as through the DRAM round trip: outputs are bit-identical
(test/unit/test_keep_on_chip.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from esact_cc.dialects import spls, transformer
from esact_cc.dialects.esact import InstructionOp
from esact_cc.dialects.lowering import GROUP_ATTR
from esact_cc.dialects.select_rows_op import SelectRowsOp
from esact_cc.runtime.isa import Buffer
from xdsl.dialects import func
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation, SSAValue

from esact_cc.ir_queries import op_label

if TYPE_CHECKING:
    from esact_cc.passes.lowering_state import DramTensor, Lowering

KEEP_FRACTION = 2
"""Residents together take at most 1/KEEP_FRACTION of VBUF; the rest is the ops' tiles
(one output tile is at most a quarter, a staging chunk an eighth: `lowering_state`)."""
REGION_FRACTION = 4
"""A result written in several tiles is kept (`Region`) only up to 1/REGION_FRACTION of VBUF:
its region is held from the producer's first tile to its last reader, and a larger one left
the ops in between too little room (BERT-base 128's 128 x 768 embeddings output, 3/8 of VBUF,
read by the layer's residual: spls-design-dense-prefix 1,065,840 -> 1,296,711 cycles). Nor is
one a reader LOADs anyway (`must_store`: an output, a host segment). An SPLS prediction's input
gets one (its HLOG reads the region in either projection form): all-MiniLM-L6-v2 at 128 real
tokens, layer 5 predicted, 16 inputs: 1,825,836 -> 1,812,195 cycles, system energy 1.0178x ->
1.0011x dense (docs/design.md section 6.3)."""
SPILL_ATTR = "lowering.spill"
"""STORE attribute: why a kept activation was written to DRAM after all."""
SUMMARY_ATTR = "esact.keep_on_chip"
"""Module attribute: the compile summary's keep-on-chip line."""


def write_or_keep(lw: Lowering, value: SSAValue, vbuf: int, row0: int, rows: int, col0: int,
                  cols: int) -> bool:
    """`lw.write_tile`, or, when the tile is the whole of `value` or one of its tiles in its
    kept region (`output_tile`) and keep-on-chip keeps it, the INT8 copy only (and the FP32
    one if a reader needs DRAM for sure): True when kept, the tile at `vbuf` then belongs to
    `value` (the caller does not free it)."""
    region = None if lw.on_chip is None else lw.on_chip.region_of(value, vbuf)
    if region is not None:
        lw.write_tile(value, vbuf, row0, rows, col0, cols, fp32=False, stride=region.dram.cols)
        lw.on_chip.wrote(value, rows * cols)
        return True
    if lw.on_chip is None or not lw.on_chip.wanted(value, row0, rows, col0, cols):
        lw.write_tile(value, vbuf, row0, rows, col0, cols)
        return False
    after, stored = _last_instruction(lw), lw.on_chip.must_store(value)
    lw.write_tile(value, vbuf, row0, rows, col0, cols, fp32=stored)
    lw.on_chip.keep(value, vbuf, after, stored)
    return True


def output_tile(lw: Lowering, value: SSAValue, row0: int, rows: int, col0: int, cols: int,
                strided: bool = False) -> int:
    """Where a producer computes its tile [row0, row0 + rows) x [col0, col0 + cols) of
    `value`: inside the VBUF region kept for the whole of `value` (rows `value`'s width apart:
    only when the tile has all columns, unless the producer writes `strided` rows) when
    keep-on-chip keeps it, else a new packed VBUF tile. Either way `write_or_keep` writes it
    out after."""
    at = None if lw.on_chip is None else lw.on_chip.tile(value, row0, rows, col0, cols, strided)
    return lw.alloc(Buffer.VBUF, rows * cols) if at is None else at


def rows_on_chip(lw: Lowering, src: DramTensor, row0: int, col0: int = 0) -> int | None:
    """The VBUF address of element [row0, col0] of `src` when it is kept on chip (rows
    `src.cols` apart), else None: read it from DRAM."""
    res = None if lw.on_chip is None else lw.on_chip.lookup(src)
    return None if res is None else res.address + row0 * src.cols + col0


def _reads_on_chip(op: Operation, index: int) -> bool:
    """Whether `op` reads its operand `index` through the VBUF-reading helpers (the
    producer keeps a value only for such readers)."""
    if isinstance(op, (transformer.LayerNormOp, transformer.GeluOp, transformer.SoftmaxOp,
                       transformer.AddOp)):
        return True
    if isinstance(op, transformer.LinearOp):
        return index == 0 and op.is_quantized
    if isinstance(op, SelectRowsOp):  # one block of rows: an alias (`alias_rows`)
        return True
    if isinstance(op, spls.HLogQuantizeOp):  # the prediction's HLOG of X (spls_projection)
        return index == 0
    return isinstance(op, transformer.AttentionOp) and index < 3  # Q, K, V (QUANT)


def _last_instruction(lw: Lowering) -> InstructionOp:
    """The producer's last instruction so far (not a buffer event after it: a spill STORE
    placed after it carries its location)."""
    return next(op for op in reversed(lw.stream) if isinstance(op, InstructionOp))


def _shape(value: SSAValue) -> tuple[int, ...]:
    return tuple(value.type.get_shape())  # type: ignore[attr-defined]


def _size(value: SSAValue) -> int:
    return math.prod(_shape(value))


def _readers(value: SSAValue) -> frozenset[Operation]:
    """The ops of `value`'s block that read it (an op in a region: its ancestor there)."""
    owner = value.owner
    block = owner.parent_block() if isinstance(owner, Operation) else owner
    assert block is not None
    return frozenset(block.find_ancestor_op_in_block(u.operation) or u.operation
                     for u in value.uses)


@dataclass
class Resident:
    """A whole FP32 activation held in one VBUF tile."""

    value: SSAValue
    address: int
    """Its virtual VBUF address (row-major, packed)."""
    dram: DramTensor
    """The DRAM tensor it stands for (its readers look it up by its address)."""
    after: Operation
    """The producer's last instruction: a spill STORE goes right after it."""
    readers: frozenset[Operation]
    stored: bool
    """Whether its FP32 copy is in DRAM too."""
    group: int | None
    """The placement group its producer was lowered in (`Lowering.lower_aside`), if any."""
    base: Resident | None = None
    """The resident whose tile holds it (rows of it: `alias_rows`), which owns the tile."""
    group_read: bool = False
    """Read by an op of a placement group: released only once the op being lowered is."""


@dataclass
class Region:
    """A result its producer writes in several tiles straight into one VBUF region holding the
    whole tensor; a `Resident` once every element is written. Only results no reader needs in
    DRAM get one (`tile`), so its tiles' FP32 copies are not stored."""

    address: int
    dram: DramTensor
    left: int
    """Elements not written yet."""

    def holds(self, vbuf: int) -> bool:
        return self.address <= vbuf < self.address + math.prod(self.dram.shape)


class OnChipActivations:
    """The residents of one lowering (see the module docstring)."""

    def __init__(self, lw: Lowering):
        self.lw = lw
        self.live: dict[int, Resident] = {}
        """DRAM address -> the resident standing for that tensor."""
        self.done: set[Operation] = set()
        self.reading: set[int] = set()
        """Residents whose address the op being lowered holds (never evicted for its tiles)."""
        self.consumed: set[int] = set()
        """Residents the op being lowered read by instructions already emitted (its QUANTs)."""
        self.depth = 0
        self.inserted = 0
        """STOREs placed back in the stream (`lower_aside` keeps them when it rolls back)."""
        self.kept = 0
        self.kept_bytes = 0
        self.spilled: list[str] = []
        self.noted: set[SSAValue] = set()
        self.building: dict[SSAValue, Region] = {}
        """Results being written tile by tile into their kept region (`tile`)."""
        self.not_kept: dict[SSAValue, str] = {}
        """Results a rule asked not to keep, with why (`decline`)."""

    # --- producers ------------------------------------------------------------------------------
    def wanted(self, value: SSAValue, row0: int, rows: int, col0: int, cols: int) -> bool:
        """Whether the tile written as `value` should stay on chip (noting why not, when a
        reader could have read it there)."""
        if not self._keepable(value):
            return False
        if (row0, col0) != (0, 0) or rows * cols != _size(value):
            return self._spill_note(value, "written in several tiles")
        return True

    def _keepable(self, value: SSAValue) -> bool:
        """A reader reads `value` on chip and it fits the kept activations' VBUF share."""
        if not any(_reads_on_chip(u.operation, u.index) for u in value.uses):
            return False
        if value in self.not_kept:
            return self._spill_note(value, self.not_kept[value])
        held = sum(math.prod(r.dram.shape) for r in self.live.values())
        held += sum(math.prod(r.dram.shape) for r in self.building.values())
        if held + _size(value) > self.lw.capacity(Buffer.VBUF) // KEEP_FRACTION:
            return self._spill_note(value, "over the VBUF share of kept activations")
        return True

    def tile(self, value: SSAValue, row0: int, rows: int, col0: int, cols: int,
             strided: bool) -> int | None:
        """`output_tile`'s address in `value`'s region (allocated at the producer's first
        tile, [0, 0]), or None: a tile of all of `value` (`wanted` keeps that one), a tile
        without all columns unless `strided`, or a value not kept."""
        region = self.building.get(value)
        width = _shape(value)[-1]
        if region is None:
            if (row0, col0) != (0, 0) or rows * cols == _size(value) \
                    or not (strided or cols == width) or not self._keepable(value):
                return None
            if _size(value) > self.lw.capacity(Buffer.VBUF) // REGION_FRACTION:
                return self._spill_note(value, "written in several tiles, over the VBUF "
                                        "share of one region") or None
            if self.must_store(value):  # STOREd anyway: a region would only save some LOADs
                return self._spill_note(value, "written in several tiles, read from DRAM "
                                        "too") or None
            self.building[value] = region = Region(
                self.lw.alloc(Buffer.VBUF, _size(value)), self.lw.tensor_of(value, on_chip=True),
                _size(value))
        return region.address + row0 * width + col0

    def decline(self, values: list[SSAValue], reason: str | None) -> None:
        """Do not keep `values` (their VBUF is worth more to the ops lowered meanwhile);
        `reason` None: keep them again as any result."""
        for value in values:
            if reason is None:
                self.not_kept.pop(value, None)
            else:
                self.not_kept[value] = reason

    def region_of(self, value: SSAValue, vbuf: int) -> Region | None:
        """`value`'s region if the tile at `vbuf` lies in it."""
        region = self.building.get(value)
        return region if region is not None and region.holds(vbuf) else None

    def wrote(self, value: SSAValue, elements: int) -> None:
        """A tile of `value`'s region is written: once all of it is, it is a resident (a
        spill STORE of it goes after this last tile's instructions)."""
        region = self.building[value]
        region.left -= elements
        if region.left <= 0:
            del self.building[value]
            self.keep(value, region.address, _last_instruction(self.lw), stored=False)

    def keep(self, value: SSAValue, address: int, after: Operation, stored: bool) -> None:
        """Record `value`'s tile at `address` as resident (`after`: its last write)."""
        dram = self.lw.tensor_of(value, on_chip=True)
        self.live[dram.address] = Resident(value, address, dram, after, _readers(value), stored,
                                           self.lw.group)
        self.kept += 1
        self.kept_bytes += dram.nbytes

    @staticmethod
    def must_store(value: SSAValue) -> bool:
        """A reader needs the DRAM copy for sure (an output, a host segment)."""
        return any(isinstance(u.operation, func.ReturnOp) or not _reads_on_chip(u.operation, u.index)
                   for u in value.uses)

    # --- readers ----------------------------------------------------------------------------------
    def lookup(self, src: DramTensor, hold: bool = True) -> Resident | None:
        """The resident standing for DRAM tensor `src`, if any, for a read on chip; `hold`:
        the caller keeps its address across allocations (never evicted until the op is
        lowered), else the read is emitted at once (`quantize`: evicted only as a last
        resort, `evict_one`)."""
        res = self.live.get(src.address)
        if res is None or res.dram.shape != src.shape:
            return None
        (self.reading if hold else self.consumed).add(src.address)
        if self.lw.group is not None:
            res.group_read = True
            if res.base is not None:
                res.base.group_read = True
        return res

    def quantize(self, src: DramTensor, row0: int, rows: int, col0: int, cols: int, abuf: int,
                 groups: tuple) -> bool:
        """`Lowering.quantize_rows` from the tile kept as `src`, if it is: QUANT each column
        group (start, end, multiplier) of those rows into ABUF; False when `src` is not kept."""
        res = self.lookup(src, hold=False)
        if res is None:
            return False
        kept = res.address + row0 * src.cols + col0  # rows src.cols apart
        for start, end, mult in groups:
            self.lw.emit("quant", "sfu", dst_addr=abuf + start, src_addr=kept + start,
                         rows=rows, cols=end - start,
                         src_stride=src.cols if end - start < src.cols else 0,
                         dst_stride=cols if end - start < cols else 0, mult=mult)
        return True

    def for_dram(self, value: SSAValue) -> None:
        """A reader asks for `value`'s DRAM tensor (a host segment, an output): make sure its
        bytes are there."""
        for res in list(self.live.values()):
            if res.value is value:
                self.store(res, self._reader("read from DRAM"))

    def before_load(self, dram_address: int) -> None:
        """A LOAD from `dram_address` is emitted: a resident holding those bytes is written
        to DRAM first (a reader that does not read VBUF)."""
        for res in list(self.live.values()):
            if res.dram.address <= dram_address < res.dram.address + res.dram.nbytes:
                self.store(res, self._reader("LOADed"))

    def _reader(self, what: str) -> str:
        current = self.lw.current
        return what if current is None else f"{what} by {op_label(current)}"

    # --- lifetime -------------------------------------------------------------------------------
    def begin(self) -> None:
        self.depth += 1

    def end(self, op: Operation) -> None:
        """`op` is lowered: release the residents every reader of which is; one an op of a
        placement group read (`Lowering.lower_aside`) only once the op being lowered is:
        esact-order places the group at its `place` directive, emitted by the same rule
        (passes/lower_spls_to_esact.py), and the group's reads must come before the tile is
        released and taken by another."""
        self.depth -= 1
        self.done.add(op)
        if self.lw.group is not None:
            return
        if not self.depth:
            self.reading.clear()
            self.consumed.clear()
        finished = self.done | self.lw.fused
        for key, res in list(self.live.items()):
            if res.readers <= finished and not (self.depth and res.group_read):
                del self.live[key]
                if res.base is None:
                    self.lw.free(Buffer.VBUF, res.address)

    def alias_rows(self, value: SSAValue, src: DramTensor, row0: int) -> bool:
        """Make `value`, rows [row0, row0 + its rows) of the kept tensor `src` (one
        contiguous block), a resident in `src`'s tile: nothing is copied (a select_rows of
        one batch element, passes/lower_select_rows.py). False when `src` is not kept."""
        base = self.live.get(src.address)
        if base is None or base.base is not None or base.dram.shape[-1] != src.shape[-1]:
            return False
        dram = self.lw.tensor_of(value, on_chip=True)
        readers = _readers(value)
        base.readers = base.readers | readers  # the tile lives while the rows are read
        self.live[dram.address] = Resident(value, base.address + row0 * src.cols, dram,
                                           base.after, readers, False, base.group, base)
        if self.must_store(value):
            self.store(self.live[dram.address], "an output or a reader that LOADs it")
        return True

    def evict_one(self, size: int) -> bool:
        """Free the oldest resident the current op does not read, else the oldest it has
        read with instructions already emitted (its QUANTs: a later read of it by the op
        LOADs the copy the eviction STOREs), so a tile of `size` may fit; False when there is
        none (or the op is lowered out of program order)."""
        if self.lw.group is not None:
            return False
        aliased = {id(r.base) for r in self.live.values() if r.base is not None}
        movable = {key: res for key, res in self.live.items()
                   if key not in self.reading and res.base is None and id(res) not in aliased
                   and not (self.depth and res.group_read)}
        read = [key for key in movable if key in self.consumed]
        key = next((k for k in movable if k not in self.consumed), read[0] if read else None)
        if key is None:
            return False
        res = self.live.pop(key)
        what = "its reads emitted, " if key in self.consumed else ""
        self.store(res, f"evicted ({what}for a {size}-element tile of "
                   f"{op_label(self.lw.current) if self.lw.current else 'the program'})")
        self.lw.free(Buffer.VBUF, res.address)
        return True

    def store(self, res: Resident, reason: str) -> None:
        """Write a resident to DRAM, right after its producer's last instruction."""
        if res.stored:
            return
        lw, res.stored = self.lw, True
        group, lw.group = lw.group, None
        try:
            lw.store_(Buffer.VBUF, res.address, res.dram.address, res.dram.rows, res.dram.cols)
        finally:
            lw.group = group
        op = lw.stream.pop()
        op.attributes[SPILL_ATTR] = StringAttr(reason)
        op.location = res.after.location
        for key in ("layer", GROUP_ATTR):  # a group's STORE moves with its producer
            if key in res.after.attributes:
                op.attributes[key] = res.after.attributes[key]
        at = next(i for i, o in enumerate(lw.stream) if o is res.after)
        lw.stream.insert(at + 1, op)
        self.inserted += 1
        self._spill_note(res.value, reason)

    def snapshot(self) -> tuple:
        """What `lower_aside` restores when the ops it lowered do not fit."""
        return (set(self.done), self.inserted, len(self.spilled), set(self.noted), dict(self.live),
                self.kept, self.kept_bytes,
                {v: replace(r) for v, r in self.building.items()}, self.depth)

    def restore(self, saved: tuple | None) -> int:
        """Back to `saved` (but for the spill STOREs placed since, which stay): their count."""
        assert saved is not None
        self.done, self.spilled, self.noted = saved[0], self.spilled[:saved[2]], saved[3]
        self.live, self.kept, self.kept_bytes = saved[4], saved[5], saved[6]
        self.building = saved[7]
        self.depth = saved[8]  # the ops whose lowering failed never reached `end`
        return self.inserted - saved[1]

    # --- report ---------------------------------------------------------------------------------
    def _spill_note(self, value: SSAValue, reason: str) -> bool:
        if value in self.noted:  # once per value (a tile each: `wanted`)
            return False
        self.noted.add(value)
        owner = value.owner
        where = op_label(owner) if isinstance(owner, Operation) else "an input"
        self.spilled.append(f"{where}: {reason}")
        return False

    def summary(self) -> str:
        """The compile summary's line."""
        line = (f"keep-on-chip: {self.kept} activation(s) kept in VBUF "
                f"({self.kept_bytes / 1024:.1f} KiB not stored and loaded back), "
                f"{len(self.spilled)} through DRAM")
        if self.spilled:
            shown = "; ".join(self.spilled[:3])
            more = f"; +{len(self.spilled) - 3} more" if len(self.spilled) > 3 else ""
            line += f" ({shown}{more})"
        return line
