"""How the SPLS prediction chain (passes/lower_spls_to_esact.py) fits the on-chip buffers:
whether the projection holds all rows at once, whether every row's SPA / PAM stays on chip
(else the ring form), the rows of a ring-form chunk, and when the cosprob reference ring fits
VBUF only beside the block form (passes/spls_block_prediction.py); the one-line error, with
the window that fits, when not even one row does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esact_cc.passes.lower_masked_inputs import fail
from esact_cc.passes.lowering_state import Lowering
from esact_cc.passes.spls_block_prediction import vbuf_needed
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer

if TYPE_CHECKING:
    from esact_cc.passes.lower_spls_to_esact import Chain


def projection_fits(lw: Lowering, c: Chain) -> bool:
    """Whether all rows of X (FP32 in VBUF, HLog codes in ABUF) and the codes of Q^ and K^ fit
    at once (`WholeProjection`, the form short sequences always had), beside two weight-code
    slots of the narrowest column tile (ViT-base's 197 rows fill ABUF but for them)."""
    code_slots = 2 * c.width_in * lw.config.mac_cols
    return (c.rows * c.width_in <= lw.capacity(Buffer.VBUF)
            and c.rows * (c.width_in + c.qk_width) + code_slots <= lw.capacity(Buffer.ABUF))


SPA_HEAD_SLOTS = 2
"""Without SIMILARITY (passes/spls_no_reuse.py), the ring form's chunk holds the SPA rows of
at least this many heads in MBUF: one being ranked while another is STOREd."""


def _mask_bytes(c: Chain) -> int:
    """MBUF bytes of the masks that persist to the layer's masked ops: reuse map (int16), row
    mask and key mask, per batch element (none without SIMILARITY: SPA is the only mask)."""
    return 0 if c.sim is None else c.batch * (3 + c.heads) * c.length


def whole_rows_fit(lw: Lowering, c: Chain) -> bool:
    """Whether the SPA of every row (all batch elements) fits MBUF beside the masks, and the
    FP32 PAM of all heads half of VBUF: then the chain keeps every row on chip (the form short
    sequences always had)."""
    return (c.spa_size * c.batch + _mask_bytes(c) <= lw.capacity(Buffer.MBUF)
            and (not c.float_pam or c.spa_size <= lw.capacity(Buffer.VBUF) // 2))


def ring_chunk_rows(lw: Lowering, c: Chain) -> int:
    """Rows per chunk in the ring form: the chunk's SPA rows of all heads fit MBUF beside the
    masks (and the SPA reference ring for overlap), its FP32 PAM rows half of VBUF beside the
    prob ring (cosprob); without SIMILARITY those of SPA_HEAD_SLOTS heads; an explicit `spls-chunk-rows` that does not fit is an error."""
    row = c.heads * c.length  # one row of every head
    if c.sim is None:  # each head's SPA rows are STOREd once ranked (no SIMILARITY reads
        # them): SPA_HEAD_SLOTS heads' rows at a time, in at most half of MBUF (the rest for
        # the attention's SPA tiles, which LOAD them back while later chunks are ranked)
        row = 2 * SPA_HEAD_SLOTS * c.length
    ring = c.ring_slots * row
    overlap = not c.probs
    mbuf_rows = (lw.capacity(Buffer.MBUF) - _mask_bytes(c) - (ring if overlap else 0)) // row
    vbuf_rows = ((lw.capacity(Buffer.VBUF) // 2 - (0 if overlap else ring)) // row
                 if c.float_pam else c.length)
    if vbuf_rows < 1 <= mbuf_rows and not overlap \
            and vbuf_needed(c, ring) <= lw.capacity(Buffer.VBUF):
        c.block_vbuf, vbuf_rows = True, 1  # one-row chunks, the ring beside the block form
    fit = min(mbuf_rows, vbuf_rows, c.length)
    if fit < 1:
        raise fail(c.predict, f"the SPLS prediction of {c.length} rows x {c.heads} heads does not "
                   f"fit on chip even one row at a time (MBUF {lw.capacity(Buffer.MBUF)} bytes, "
                   + ("no SIMILARITY)" if c.sim is None else
                      f"window {c.sim.window.value.data}{_window_that_fits(lw, c, row)})"))
    if lw.spls_chunk_rows and lw.spls_chunk_rows > fit:
        raise CompileError(f"lower-to-esact: spls-chunk-rows={lw.spls_chunk_rows} does not fit "
                           f"the on-chip buffers at {c.length} rows x {c.heads} heads (at most "
                           f"{fit})")
    return fit


def _window_that_fits(lw: Lowering, c: Chain, row: int) -> str:
    """'; window <= N fits' when a smaller reference ring (one slot per window row) leaves room
    for one chunk row, else '' (then no window fits: the masks or PAM rows alone do not)."""
    if c.sim.pam is None:  # overlap: the SPA ring shares MBUF with the masks
        room = (lw.capacity(Buffer.MBUF) - _mask_bytes(c)) // row
    elif c.float_pam and (lw.capacity(Buffer.MBUF) - _mask_bytes(c)) // row >= 1:
        # cosprob: the FP32 prob ring beside what the block form holds, a row kept spare
        room = (lw.capacity(Buffer.VBUF) - vbuf_needed(c, 0)) // row  # for the tiles' gaps
    else:
        return ""
    return f"; window <= {room - 1} fits" if room >= 2 else ""


def chunk_rows(lw: Lowering, length: int) -> int:
    """Rows per prediction chunk: the `spls-chunk-rows` option of lower-to-esact, or the MAC
    array's rows when it is not given; 0 = one chunk of all rows."""
    rows = lw.config.mac_rows if lw.spls_chunk_rows is None else lw.spls_chunk_rows
    return length if rows <= 0 else min(rows, length)
