"""Which weight column tiles of a dense linear are in WBUF, across its row tiles
(passes/lower_linear.py).

A linear of several row tiles reads all its weights once per row tile. Its column tiles are
as wide as the accumulators allow (m_tile x n_tile in an ACC bank), usually far narrower than a
WBUF bank, so they are LOADed in groups that fill a bank: when every group fits WBUF's free
banks all stay there for the whole linear (`resident`), else row tiles take the groups in
serpentine order (odd row tiles backwards) and each keeps its last group for the next row tile,
which starts with it. Either way no weight is LOADed twice in a row. A linear of one row tile
LOADs one column tile at a time, as it always did (the golden binaries pin that). Beside an
SPLS prediction (`Lowering.group`) too since s13: the digits ViT's K / V linears there run one
17-row tile per batch element and LOADed V's weights once per tile (batch 2: one more 100-cycle
LOAD per layer in the in-order load queue); held weights once moved where the prediction's
tiles land until an attention found no free ABUF run (test_spls_key_codes at 36 KiB, 6ca9168),
which no longer happens (that test passes).
"""

from __future__ import annotations

from esact_cc.passes.lowering_state import DramTensor, Lowering
from esact_cc.runtime.isa import Buffer


class WeightTiles:
    """The WBUF weight tiles and VBUF DEQUANT rows of one dense linear's column tiles."""

    def __init__(self, lw: Lowering, w: DramTensor, table: DramTensor, n_tile: int,
                 row_tiles: int):
        self.lw, self.w, self.table, self.n_tile = lw, w, table, n_tile
        k, n = w.shape
        columns = list(range(0, n, n_tile))
        banks = lw.rings[Buffer.WBUF]
        self.reuse = row_tiles > 1
        per_group = max(1, banks.bank_size // (k * n_tile)) if self.reuse else 1
        self.groups = [columns[g:g + per_group] for g in range(0, len(columns), per_group)]
        self.resident = self.reuse and len(self.groups) <= banks.free_banks()
        self.held: dict[int, tuple[int, dict[int, tuple[int, int]]]] = {}
        """group -> (its WBUF region, column -> (WBUF weights, VBUF DEQUANT rows))."""

    def order(self, row_tile: int) -> list[tuple[int, int]]:
        """(group, first column) of each column tile in the GEMM order of row tile i."""
        groups = range(len(self.groups))
        backwards = self.reuse and row_tile % 2 == 1
        return [(g, n0) for g in (reversed(groups) if backwards else groups)
                for n0 in self.groups[g]]

    def fetch(self, g: int, hoist: bool = False) -> None:
        """LOAD group g (its first tile's weights hoisted past the previous op's tail when
        `hoist`: they depend on nothing, so the load queue fetches them early)."""
        k, n = self.w.shape
        region = self.lw.alloc(Buffer.WBUF, sum(k * min(self.n_tile, n - c)
                                                for c in self.groups[g]))
        tiles, offset = {}, 0
        for c in self.groups[g]:
            tiles[c] = self.lw.load_weight_tile(self.w, self.table, c, self.n_tile,
                                                hoist and not tiles, into=region + offset)
            offset += k * min(self.n_tile, n - c)
        self.held[g] = region, tiles

    def tile(self, g: int, n0: int) -> tuple[int, int]:
        """(WBUF weights, VBUF DEQUANT rows) of column tile n0, LOADing its group if needed."""
        if g not in self.held:
            self.fetch(g)
        return self.held[g][1][n0]

    def done(self, g: int, n0: int, keep: bool) -> None:
        """Column tile n0's GEMMs are emitted: after its group's last tile the group is
        released, unless it stays (`resident`, or `keep`: the next row tile starts with it)."""
        if n0 == self.groups[g][-1] and not (self.resident or (keep and self.reuse)):
            self._release(g)

    def release(self) -> None:
        for g in list(self.held):
            self._release(g)

    def _release(self, g: int) -> None:
        region, tiles = self.held.pop(g)
        self.lw.free(Buffer.WBUF, region)
        for _, sv in tiles.values():
            self.lw.free(Buffer.VBUF, sv)
