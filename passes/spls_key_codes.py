"""Where phase 2 of the SPLS prediction (passes/lower_spls_to_esact.py) reads the K^ codes:
every query chunk's per-head BPU multiplies its Q^ rows by the K^ codes of ALL keys of its
K head, so K^ is read once per chunk.

- `ResidentKeys`: the K^ codes of a batch element [L, Nk] stay in ABUF for all its chunks
  (the projection leaves them there: `k_codes`). Short sequences, and grouped-query models
  whose K^ has only the K heads' columns (LLaMA-style 12 / 4 heads at 1024 tokens: 256 KiB).
- `SpilledKeys`: the codes of all keys do not fit ABUF (BERT-base at 2048 tokens: 2048 x 768
  codes, ABUF 512 KiB). At the first chunk of a batch element its codes are made in row
  pieces (the projection's HLOG with the tensor's scale: the codes of the resident form) and
  STOREd to a DRAM scratch [B, L, Nk] INT8; every chunk (the block form,
  passes/spls_block_prediction.py: every block of rows) then LOADs them back one group of K
  heads at a time into an ABUF region sized for the largest group that fits while a quarter
  of ABUF stays free (the masked Q linear lowered beside the chain takes its tiles there).
  Chunks visit the groups in alternating order, so a chunk's first group is the previous
  chunk's last, still in the region: per chunk (G - 1) / G of the L x Nk codes come back from
  DRAM, as LOADs the report charges like any other. The BPUs and their operands' values are
  those of the resident form, so the PAM, the masks and the outputs are bit-identical.
  Re-reading K^ per chunk is the price of keeping the chunk's SPA / PAM rows of every head on
  chip for SIMILARITY; its traffic is L x Nk bytes per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from esact_cc.passes.lower_masked_inputs import fail
from esact_cc.passes.lowering_state import DramTensor, Lowering
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain
    from esact_cc.passes.spls_projection import WholeProjection
    from esact_cc.passes.spls_streamed_projection import StreamedProjection

HeadGroup = tuple[int, int, int, int]
"""(first K head, end K head, ABUF address of the first one's codes, row stride)."""


class _KeyCodes:
    """What phase 2 asks: per query head, where its K^ head's codes are."""

    def groups(self, lw: Lowering, c: Chain, b: int, r0: int) -> Iterator[HeadGroup]:
        raise NotImplementedError

    def heads(self, lw: Lowering, c: Chain, b: int, r0: int) -> Iterator[tuple[int, int, int]]:
        """(query head, ABUF address of its K^ head's codes, row stride) for the chunk from
        row r0 of batch element b, in the order the BPUs run; a group's LOAD is emitted when
        the previous group's heads are done (iterate lazily)."""
        for k0, k1, at, stride in self.groups(lw, c, b, r0):
            for h in range(k0 * c.group, k1 * c.group):
                yield h, at + (h // c.group - k0) * c.head_dim, stride


FREE_FRACTION = 4
"""ABUF left free beside the spilled form's group region: 1 / FREE_FRACTION of it."""


@dataclass
class ResidentKeys(_KeyCodes):
    """All K heads' codes on chip: one group."""

    projection: WholeProjection | StreamedProjection

    def groups(self, lw: Lowering, c: Chain, b: int, r0: int) -> Iterator[HeadGroup]:
        yield 0, c.predict.key_heads, self.projection.k_codes(lw, c, b, r0), c.k_width

    def finish(self, lw: Lowering) -> None:
        """Nothing of its own: the projection frees the codes."""


@dataclass
class SpilledKeys(_KeyCodes):
    """K^ codes in a DRAM scratch, LOADed per group of K heads (see the module docstring)."""

    projection: StreamedProjection
    scratch: DramTensor
    """[B, L, Nk] INT8 codes."""
    region: int
    """ABUF region of one group's codes [L, heads_per_group x head_dim]."""
    heads_per_group: int
    made: set[int] = field(default_factory=set)
    """Batch elements whose codes are in the scratch."""
    resident: tuple[int, int] | None = None
    """(batch element, first K head) of the group in the region."""

    @staticmethod
    def plan(lw: Lowering, c: Chain, projection: StreamedProjection) -> SpilledKeys:
        """The region for the largest group of K heads that fits (a quarter of ABUF left
        free when that still leaves room for one head) and the DRAM scratch."""
        one_head = c.length * c.head_dim
        for keep_free in (lw.capacity(Buffer.ABUF) // FREE_FRACTION, 0):
            reserve = _try_alloc(lw, keep_free) if keep_free else None
            if keep_free and reserve is None:
                continue
            region = None
            for heads in range(c.predict.key_heads, 0, -1):
                region = _try_alloc(lw, heads * one_head)
                if region is not None:
                    break
            if reserve is not None:
                lw.free(Buffer.ABUF, reserve)
            if region is not None:
                scratch = lw.scratch_tensor((c.batch, c.length, c.k_width), np.int8)
                return SpilledKeys(projection, scratch, region, heads)
        raise fail(c.predict, f"the K^ codes of one head over all {c.length} keys "
                   f"({one_head} codes) do not fit ABUF beside the prediction's tiles")

    def _make(self, lw: Lowering, c: Chain, b: int) -> None:
        """Batch element b's K^ codes into the scratch, in row pieces through the region."""
        piece = min(self.projection.stage_rows(c), self.heads_per_group * c.head_dim
                    * c.length // c.k_width)
        if piece < 1:
            raise fail(c.predict, f"one row of K^ codes ({c.k_width}) exceeds the ABUF region "
                       f"of {self.heads_per_group} head(s) of {c.length} keys")
        for r0 in range(0, c.length, piece):
            n = min(piece, c.length - r0)
            self.projection.k_rows(lw, c, b, r0, n, self.region)
            lw.store_(Buffer.ABUF, self.region,
                      self.scratch.address + (b * c.length + r0) * c.k_width, n, c.k_width)
        self.made.add(b)
        self.resident = None  # the pieces went through the region

    def groups(self, lw: Lowering, c: Chain, b: int, r0: int) -> Iterator[HeadGroup]:
        """The K-head groups of one chunk (block form: block), each LOADed unless still in
        the region; odd ones visit them backwards (the previous one's last group first)."""
        chunk = r0 // (c.block_rows or c.chunks[0][1])
        if b not in self.made:
            self._make(lw, c, b)
        kv, d, g = c.predict.key_heads, c.head_dim, self.heads_per_group
        order = [(k0, min(k0 + g, kv)) for k0 in range(0, kv, g)]
        for k0, k1 in order[::-1] if chunk % 2 else order:
            if self.resident != (b, k0):
                lw.load(Buffer.ABUF, self.region,
                        self.scratch.address + b * c.length * c.k_width + k0 * d,
                        c.length, (k1 - k0) * d, dram_stride=c.k_width)
                self.resident = (b, k0)
            yield k0, k1, self.region, (k1 - k0) * d

    def finish(self, lw: Lowering) -> None:
        lw.free(Buffer.ABUF, self.region)


def _try_alloc(lw: Lowering, size: int) -> int | None:
    try:
        return lw.alloc(Buffer.ABUF, size)
    except CompileError:
        return None


HeadKeys = ResidentKeys | SpilledKeys


def key_codes(lw: Lowering, c: Chain, projection: WholeProjection | StreamedProjection
              ) -> HeadKeys:
    """The resident form when the projection left the K^ codes on chip, else the spilled one."""
    if c.regions.get("kc") is not None:
        return ResidentKeys(projection)
    from esact_cc.passes.spls_streamed_projection import StreamedProjection

    assert isinstance(projection, StreamedProjection), "the whole projection holds K^ on chip"
    return SpilledKeys.plan(lw, c, projection)
