"""Phase 1 of the SPLS prediction chain over row tiles (`StreamedProjection`): the form for
sequences whose rows of X and Q^ / K^ do not fit on chip at once (BERT-base at 512 tokens).

The HLog scales are per batch element (of X, of Q^ and of K^), so each tensor is read twice
and an element's scale is the max of its row tiles' scales, which is exactly the scale of the
whole element (float32 rounding is monotonic): results equal `WholeProjection`'s bit for bit.
1. X: per row tile, LOAD (none when keep-on-chip holds X: its rows are read in place) +
   HLOG (dynamic: the tile's scale; codes discarded); then per row tile LOAD + HLOG with
   `scale_count` (the max of its element's tile scales: s_X), the BPU
   of each column tile of [W_Q | W_K] codes (reLOADed per row tile), DEQUANT (* s_W * s_X +
   bias) into the tile's FP32 Q (then K) rows, whose HLOG (dynamic) gives the tile's Q (K)
   scale, and a STORE of those rows to a DRAM scratch tensor [B L, 2N].
2. Phase 2 asks for the K^ codes of batch element b (`k_codes`: its K rows LOADed back per
   tile, HLOG with the max of its K tile scales = s_K, all L rows into ABUF, or when they do
   not fit, into a DRAM scratch LOADed per group of K heads: spls_key_codes.py) and the Q^ codes
   of a row chunk (`q_codes`: LOAD + HLOG with s_Q), so only one chunk of Q^ is on chip.
The second reads and the reLOADed weight codes are DRAM traffic the report charges as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from esact_cc.passes.lower_masked_inputs import MaskRows, fail
from esact_cc.passes.lowering_state import F32, OUT_FRACTION, DramTensor, Lowering, round_tile
from esact_cc.passes.on_chip_activations import rows_on_chip
from esact_cc.passes.spls_projection import (
    PREDICT,
    emit_column_tile,
    phase2_inputs,
    projection_constants,
)
from esact_cc.passes.spls_scratch import PredictScratch, weight_code_slots
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain


@dataclass
class StreamedProjection:
    """Phase 1 over row tiles of `tile_rows` (see the module docstring)."""

    codes: np.ndarray
    codes_at: int
    vectors_at: int
    tiles: list[tuple[int, int, int]]
    """(batch element, first row, rows) of each row tile, within one batch element."""
    n_tile: int
    acc_buf: PredictScratch
    mask_rows: MaskRows
    code_slots: list[tuple[int, int]]
    real: DramTensor
    """[B L, 2N] FP32: the dequantized Q | K rows, read back for their HLog codes."""
    stage_limit: int = 0
    """Rows of the staging region when the block form sets it (spls_block_prediction.py)."""
    group = 0
    """Never by groups of batch elements (`WholeProjection.group`): all row tiles in `emit`."""

    @property
    def per_batch(self) -> int:
        return sum(1 for b, _, _ in self.tiles if b == 0)

    @staticmethod
    def plan(lw: Lowering, c: Chain) -> StreamedProjection:
        r, width = c.regions, c.width
        vbuf_tile = lw.capacity(Buffer.VBUF) // OUT_FRACTION
        tile_limit = min(vbuf_tile // c.width_in, vbuf_tile // width)
        acc_bank = getattr(lw.rings[Buffer.ACC], "bank_size", lw.capacity(Buffer.ACC))
        if tile_limit < 1:
            raise fail(c.predict, f"one row of X ({c.width_in}) or of Q^ ({width}) exceeds a "
                       "VBUF tile")
        tile_rows = round_tile(tile_limit, c.length, lw.config.mac_rows)
        n_limit = min(lw.capacity(Buffer.ABUF) // 8 // c.width_in,
                      acc_bank // PredictScratch.SLOT_FRACTION // tile_rows)
        if n_limit < 1:
            raise fail(c.predict, f"the prediction of {tile_rows} rows x {c.width_in} inputs "
                       "exceeds the on-chip buffers")
        n_tile = round_tile(n_limit, width, lw.config.mac_cols)
        codes, codes_at, vectors_at = projection_constants(lw, c)
        acc_buf = PredictScratch(lw, Buffer.ACC, tile_rows * n_tile)  # no PAM: BPU_SCORES
        r["pam"] = None  # type: ignore[assignment]
        mask_rows = phase2_inputs(lw, c)
        tiles = [(b, r0, min(tile_rows, c.length - r0)) for b in range(c.batch)
                 for r0 in range(0, c.length, tile_rows)]
        r["sx_tiles"], r["sx"] = (lw.alloc(Buffer.VBUF, len(tiles)),
                                  lw.alloc(Buffer.VBUF, c.batch))
        r["qk_tiles"] = lw.alloc(Buffer.VBUF, 2 * len(tiles))  # [Q | K][b][tile]
        kept = rows_on_chip(lw, c.x, 0) is not None  # X read where it is kept (`_x_tile`)
        r["vx"] = (None if kept  # type: ignore[assignment]
                   else lw.alloc(Buffer.VBUF, tile_rows * c.width_in))
        r["xc"] = lw.alloc(Buffer.ABUF, tile_rows * c.width_in)
        r["real"] = lw.alloc(Buffer.VBUF, tile_rows * width)
        r["discard"] = lw.alloc(Buffer.ABUF, tile_rows * width)  # codes of scale-only HLOGs
        slots = weight_code_slots(lw, c.width_in * n_tile, 2 * n_tile)
        real = lw.scratch_tensor((c.rows, c.qk_width), np.float32)
        return StreamedProjection(codes, codes_at, vectors_at, tiles, n_tile, acc_buf,
                                  mask_rows, slots, real)

    def _tile_scale_at(self, c: Chain, part: int, b: int) -> int:
        """VBUF address of the first tile scale of Q (part 0) or K (part 1) of batch b."""
        return c.regions["qk_tiles"] + (part * c.batch + b) * self.per_batch

    def emit(self, lw: Lowering, c: Chain) -> None:
        r, x_bits = c.regions, c.op.bits.value.data
        for t, (b, r0, n) in enumerate(self.tiles):  # the X tile scales
            lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=r["xc"],
                    src_addr=self._x_tile(lw, c, b, r0, n, hoist=False),
                    rows=n, cols=c.width_in, bits=x_bits, dynamic=1,
                    scale_out_addr=r["sx_tiles"] + t, scale=1.0)
        slot = 0
        for b, r0, n in self.tiles:
            lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=r["xc"],
                    src_addr=self._x_tile(lw, c, b, r0, n, hoist=True),
                    rows=n, cols=c.width_in, bits=x_bits, scale_count=self.per_batch,
                    scale_in_addr=r["sx_tiles"] + b * self.per_batch,
                    scale_out_addr=r["sx"] + b, scale=1.0)
            for part in (0, 1):
                slot = self._part(lw, c, b, r0, n, part, slot)

    @staticmethod
    def _x_tile(lw: Lowering, c: Chain, b: int, r0: int, n: int, hoist: bool) -> int:
        """VBUF address of rows [r0, r0 + n) of batch element b of X: in the tile keep-on-chip
        holds X in (the layer norm's output the Q / K / V GEMMs read there too), else LOADed
        into r["vx"] (`hoist`: X is read-only here, LOADed while the last tile's BPUs run)."""
        kept = rows_on_chip(lw, c.x, b * c.length + r0)
        if kept is not None:
            return kept
        lw.load(Buffer.VBUF, c.regions["vx"],
                c.x.address + (b * c.length + r0) * c.width_in * F32, n, c.width_in)
        if hoist:
            lw.hoist_last()
        return c.regions["vx"]

    def _part(self, lw: Lowering, c: Chain, b: int, r0: int, n: int, part: int,
              slot: int) -> int:
        """Q (part 0) or K (part 1) rows of one row tile: BPU + DEQUANT per column tile, the
        tile's HLog scale, the STORE of its FP32 rows. Returns the next code slot."""
        r, both = c.regions, c.qk_width
        c0, width = part * c.width, (c.width, c.k_width)[part]
        for n0 in range(c0, c0 + width, self.n_tile):
            nt = min(self.n_tile, c0 + width - n0)
            emit_column_tile(lw, c, self, slot, n0, nt, n, r["real"] + n0 - c0, width, b)
            slot += 1
        tile = r0 // self._tile_rows
        lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=r["discard"], src_addr=r["real"],
                rows=n, cols=width, bits=c.predict.bits.value.data, dynamic=1,
                scale_out_addr=self._tile_scale_at(c, part, b) + tile, scale=1.0)
        lw.store_(Buffer.VBUF, r["real"], self.real.address + ((b * c.length + r0) * both + c0) * F32,
                  n, width, dram_stride=both * F32)
        return slot

    @property
    def _tile_rows(self) -> int:
        return self.tiles[0][2]

    def release(self, lw: Lowering, c: Chain) -> None:
        """Free phase 1's tiles; take phase 2's regions: K^ codes of one batch element, Q^
        codes of one chunk and the FP32 rows they are made from."""
        r = c.regions
        lw.free(Buffer.ABUF, r["xc"], r["discard"], *(w for w, _ in self.code_slots))
        lw.free(Buffer.VBUF, *([r["vx"]] if r["vx"] is not None else []), r["real"], r["sx"],
                r["sx_tiles"], *(v for _, v in self.code_slots))
        try:
            r["kc"] = lw.alloc(Buffer.ABUF, c.length * c.k_width)
        except CompileError:  # phase 2 LOADs them per group of K heads (spls_key_codes.py)
            r["kc"] = None  # type: ignore[assignment]
        try:
            r["qc"] = lw.alloc(Buffer.ABUF, c.chunks[0][1] * c.width)
        except CompileError:
            if r["kc"] is None:
                raise
            lw.free(Buffer.ABUF, r["kc"])  # the chunk's Q^ codes come first: K^ from DRAM
            r["kc"] = None  # type: ignore[assignment]
            r["qc"] = lw.alloc(Buffer.ABUF, c.chunks[0][1] * c.width)
        r["stage"] = lw.alloc(Buffer.VBUF, self.stage_rows(c) * c.width)

    def stage_rows(self, c: Chain) -> int:
        """Rows of FP32 Q^ / K^ the staging region holds (a tile's or a chunk's)."""
        return self.stage_limit or max(self._tile_rows, c.chunks[0][1])

    def k_rows(self, lw: Lowering, c: Chain, b: int, r0: int, n: int, dst: int) -> None:
        """The K^ codes of rows [r0, r0 + n) of batch element b at ABUF `dst` (row stride Nk;
        n at most `stage_rows`)."""
        self._codes(lw, c, b, r0, n, 1, dst)

    def _codes(self, lw: Lowering, c: Chain, b: int, r0: int, n: int, part: int,
               dst: int) -> None:
        """HLog codes of rows [r0, r0 + n) of Q (part 0) or K (part 1) of batch b at `dst`,
        with the tensor's scale (the max of its tile scales) written to its s_Q / s_K slot."""
        r, both, width = c.regions, c.qk_width, (c.width, c.k_width)[part]
        lw.load(Buffer.VBUF, r["stage"],
                self.real.address + ((b * c.length + r0) * both + part * c.width) * F32,
                n, width, dram_stride=both * F32)
        lw.emit("hlog", PREDICT, dst_buf=Buffer.ABUF, dst_addr=dst, src_addr=r["stage"], rows=n,
                cols=width, bits=c.predict.bits.value.data, scale_count=self.per_batch,
                scale_in_addr=self._tile_scale_at(c, part, b),
                scale_out_addr=r["sqk"] + 2 * b + part, scale=1.0)

    def k_codes(self, lw: Lowering, c: Chain, b: int, r0: int) -> int:
        """Batch element b's K^ codes [L, Nk] in ABUF, made at its first chunk."""
        if r0 == 0:  # in pieces of the staging region's rows
            step = self.stage_rows(c)
            for p0 in range(0, c.length, step):
                n = min(step, c.length - p0)
                self._codes(lw, c, b, p0, n, 1, c.regions["kc"] + p0 * c.k_width)
        return c.regions["kc"]

    def q_codes(self, lw: Lowering, c: Chain, b: int, r0: int, n: int) -> int:
        """The Q^ codes of rows [r0, r0 + n) of batch element b in ABUF (row stride N)."""
        self._codes(lw, c, b, r0, n, 0, c.regions["qc"])
        return c.regions["qc"]

    def finish(self, lw: Lowering, c: Chain) -> None:
        r = c.regions
        lw.free(Buffer.ABUF, r["qc"], *([r["kc"]] if r["kc"] is not None else []))
        lw.free(Buffer.VBUF, r["stage"], r["qk_tiles"])
