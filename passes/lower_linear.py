"""Instruction selection for `transformer.linear` (INT8), with or without masks: one rule,
the mask forms are parameters of it (masks: `passes/lower_masked_inputs.py`).

linear (x [.., in] @ W [in, out], INT8 W, per-channel scales):
- dense: row tiles of all rows, per input group QUANT (or LOAD of an INT8 copy of x), GEMM,
  DEQUANT (later groups ADD their FP32 partial);
- `rows(%map)`: row tiles of whole sequences (batch elements: as many as fit, so the kept rows
  of several images fill the MAC array together), GEMM with the computed-row mask
  (reused rows are neither computed nor written; the linear of the SPLS prediction's input gets
  one GEMM per prediction chunk), DEQUANT, SCATTER_ROWS with the reuse map; a sequence whose
  [L, in] input exceeds ABUF is fed in input-column chunks the GEMM accumulates (exact; each
  input group chunked on its own, its partial DEQUANTized with its scale);
- `keys(%mask)`: one GEMM per head column block with that head's key mask as row mask. Rows a
  head does not select are NOT zeroed (the reference interpreter zeroes them): no computed
  attention row reads them (the key mask is the union of the computed rows' SPA).
Then the fused GELU or residual ADD when that op is the linear's only user, and the STOREs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.ir_queries import op_label
from esact_cc.passes.linear_epilogues import linear_epilogue
from esact_cc.passes.linear_weight_tiles import WeightTiles
from esact_cc.passes.lower_masked_inputs import (
    done_with,
    fail,
    mask_tiles,
    plan_masked_inputs,
    reused_rows_unread,
)
from esact_cc.passes.lowering_state import (
    F32,
    HALF,
    MAX_DIM,
    OUT_FRACTION,
    DeferredRows,
    DramTensor,
    Lowering,
    MaskTiles,
    node_name,
    round_tile,
    shape_of,
)
from esact_cc.passes.on_chip_activations import output_tile, rows_on_chip, write_or_keep
from esact_cc.passes.spls_projection import group_elements
from esact_cc.passes.spls_scratch import PredictScratch, chained_q_acc
from esact_cc.quantized_kernels import (
    input_groups,
    input_runs,
    linear_dequant_scale,
)
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from xdsl.ir import SSAValue

# ----------------------------------------------------------------------------- linear


def lower_linear(lw: Lowering, op: transformer.LinearOp) -> None:
    """INT8 linear, dense or masked (see the module docstring)."""
    if op.is_masked:
        plan_masked_inputs(lw, op)
    token, groups, x8 = linear_input_format(lw, op)
    deferred, x = _linear_input(lw, op, token, x8)
    w = lw.tensor_of(op.weight)
    if w.dtype != np.int8:
        raise CompileError(f"{op_label(op)}: weight must be int8 (run quantize first)")
    k, n = w.shape
    dequant = DequantTable.of(lw, op, n)
    component = lw.component_of(op)
    mask_value = op.rows if op.rows is not None else op.keys
    tiles = None if mask_value is None else mask_tiles(
        lw, op, mask_value, "rows" if op.rows is not None else "keys")
    row_tiles, n_tile = _linear_tiling(lw, op, x, k, n, len(groups), tiles)
    epilogue, out_value = linear_epilogue(lw, op, n_tile)
    keyed = op.keys is not None
    # reused rows take their representative's unless only rows the same map computes are read
    scattered = None if tiles is None or keyed or reused_rows_unread(out_value, op.rows) else tiles
    # Its SFU steps run on the kept rows (the GEMMs' MBUF row mask): DEQUANT and the group ADDs
    # always (SCATTER_ROWS then fills the reused rows), the epilogue too when nothing reads
    # the reused rows (docs/design.md section 6.3)
    kept_base = None if tiles is None or keyed or tiles.row_mask is None else tiles.row_mask
    # A masked row tile is one whole sequence: when its [L, k] input exceeds ABUF, the GEMM
    # accumulates over input chunks (exact int32 sums), each chunk loaded per column tile.
    k_tile = _masked_input_chunk(lw, op, x, k, tiles)

    def prepare(m0: int, mt: int) -> tuple[int, int, tuple[DramTensor, bool]]:
        return _row_tile_input(lw, x, x8 is not None, token, m0, mt, k, k_tile, groups, deferred)

    chained = _chained_q(lw, op, tiles)
    # Several row tiles read the same weights: none is LOADed twice in a row (`WeightTiles`).
    weights = WeightTiles(lw, w, dequant.table, n_tile, len(row_tiles))
    # The first weight tile is loaded before the activations: it depends on nothing, so the
    # load queue fetches it while the producer of x is still running.
    weights.fetch(0, hoist=True)
    ready = None
    for i, (m0, mt) in enumerate(row_tiles):
        a, row_scales, (chunk_source, chunk_preq) = ready or prepare(m0, mt)
        ready = None
        kept = {} if kept_base is None else {"has_row_mask": 1, "row_mask_addr": kept_base + m0}
        ahead = _ahead_column(lw, tiles, row_tiles, i, k, n, n_tile)
        order = weights.order(i)
        for j, (group, n0) in enumerate(order):
            nt = min(n_tile, n - n0)
            wt, sv = weights.tile(group, n0)
            o = -1
            for g, (start, end, _) in enumerate(groups):
                acc, pinned = _acc_tile(lw, mt * nt, i, chained)
                if k_tile == k:
                    _emit_gemms(lw, op, component, tiles, acc=acc, a=a + start,
                                w=wt + start * nt, m0=m0, mt=mt, k=k, width=end - start, n0=n0,
                                nt=nt, n_tile=n_tile)
                else:
                    _chunked_gemms(lw, op, component, tiles, chunk_source, chunk_preq,
                                   groups[g], acc=acc, a=a, w=wt, m0=m0, mt=mt, k_tile=k_tile,
                                   n0=n0, nt=nt, n_tile=n_tile)
                if g == 0 and j == ahead:  # the next row tile's input, while these GEMMs run
                    ready = prepare(*row_tiles[i + 1])
                o = _dequant_group(lw, dequant, g, o, acc, mt, nt, sv, row_scales, kept,
                                   (out_value, m0, n0))
                if not pinned:
                    lw.free(Buffer.ACC, acc)
            weights.done(group, n0, keep=i + 1 < len(row_tiles) and group == order[-1][0])
            _finish_column_tile(lw, scattered, epilogue, out_value, o, m0, mt, n0, nt,
                                {} if scattered is not None else kept)
        if token:
            lw.free(Buffer.VBUF, row_scales)
        lw.free(Buffer.ABUF, a)
    weights.release()
    if tiles is not None:
        done_with(lw, op, tiles)


def linear_input_format(lw: Lowering, op: transformer.LinearOp
                        ) -> tuple[bool, tuple, DramTensor | None]:
    """(whether the linear quantizes per token, its input groups (per token: the runs that
    get their own row scales), the INT8 copy of its input when the producer wrote one in
    exactly these groups, else None: then the linear quantizes the FP32 input itself)."""
    token = op.token_scales is not None
    groups = token_runs(lw, op) if token else lw.input_format(op)
    x8 = lw.int8_tensors.get(op.x) if not token and lw.format_of(op.x) == groups else None
    return token, groups, x8


def _linear_input(lw: Lowering, op: transformer.LinearOp, token: bool,
                  x8: DramTensor | None) -> tuple[DeferredRows | None, DramTensor]:
    """Where the linear's input comes from: (the deferred producer or None, the tensor the
    row tiles read); `x8` from `linear_input_format`."""
    if x8 is None and op.x in lw.int8_tensors and op.x not in lw.fp32_needed:
        raise CompileError(f"{op_label(op)}: its input was only written in another INT8 format")
    # An input left to its consumers (an RMSNorm: `DeferredRows`) is made per row chunk here.
    deferred = lw.deferred_rows.get(op.x) if token else None
    x = x8 if x8 is not None else deferred.source if deferred else lw.f32_tensor(op.x, "x")
    return deferred, x


def _dequant_group(lw: Lowering, dequant: DequantTable, g: int, o: int, acc: int, mt: int,
                   nt: int, sv: int, row_scales: int, kept: dict[str, int],
                   tile: tuple[SSAValue, int, int]) -> int:
    """Dequantize input group g's accumulators into the column tile's VBUF output `o` (the
    first group allocates it: `output_tile` of `tile`, (the value written, first row, first
    column); a later group's partial is dequantized and added, in group order; `kept`: the
    row-mask fields of a row-masked GEMM's kept rows, or none). Returns `o`."""
    if g == 0:
        value, m0, n0 = tile
        o = output_tile(lw, value, m0, mt, n0, nt)
        dequant.emit(lw, g, o, acc, mt, nt, sv, row_scales, kept)
        return o
    t = lw.alloc(Buffer.VBUF, mt * nt)
    dequant.emit(lw, g, t, acc, mt, nt, sv, row_scales, kept)
    lw.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=t, rows=mt, cols=nt, **kept)
    lw.free(Buffer.VBUF, t)
    return o


def _finish_column_tile(lw: Lowering, row_tiles: MaskTiles | None, epilogue, out_value,
                        o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]
                        ) -> None:
    """A column tile's output: reused rows take their representative's row (`row_tiles`: a
    row-masked linear's masks), the epilogue ops run on it (on the rows `kept` keeps: the
    row-mask fields when nothing reads the reused rows), and it is written out."""
    if row_tiles is not None:  # per sequence: a reuse map holds rows of its own sequence
        for s0 in range(0, mt, row_tiles.length):
            lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=o + s0 * nt,
                    src_addr=o + s0 * nt, rows=row_tiles.length, cols=nt,
                    map_addr=row_tiles.reuse_map + 2 * (m0 + s0))
    if epilogue is not None:
        epilogue(o, m0, mt, n0, nt, kept)
    if not write_or_keep(lw, out_value, o, m0, mt, n0, nt):
        lw.free(Buffer.VBUF, o)


def _ahead_column(lw: Lowering, tiles: MaskTiles | None, row_tiles: list[tuple[int, int]],
                  i: int, k: int, n: int, n_tile: int) -> int:
    """After the GEMM of which column tile of dense row tile i the input of row tile i + 1 is
    prepared (LOADed, quantized into its own ABUF region), or -1: then it is prepared when its
    turn comes and the MAC array waits for it. The second column tile's (the first's when
    there is one): its weights are queued before the preparation's LOADs and its DEQUANT
    after the preparation's SFU work, which runs while its GEMM does."""
    if tiles is not None or i + 1 >= len(row_tiles) or lw.room(Buffer.ABUF) < row_tiles[i + 1][1] * k:
        return -1
    return min(1, -(-n // n_tile) - 1)


@dataclass(frozen=True)
class DequantTable:
    """A linear's DEQUANT rows in DRAM: per input group its scale x the weight scale (per
    token: the weight scale alone, the row scales come from QUANT_ROWS), then the bias."""

    table: DramTensor
    bias_row: int
    has_bias: int
    token: bool

    @staticmethod
    def of(lw: Lowering, op: transformer.LinearOp, n: int) -> DequantTable:
        weight_scale = lw.weight_array(op.weight_scale, "weight_scale")
        token = op.token_scales is not None
        rows = ([weight_scale.astype(np.float32)] if token else
                [linear_dequant_scale(scale, weight_scale) for scale in _input_scales(lw, op)])
        has_bias = int(op.bias is not None)
        if has_bias:
            rows.append(lw.weight_array(op.bias, "bias").astype(np.float32).reshape(n))
        table = lw.constant(f"{node_name(op) or 'linear'}.dequant", np.stack(rows).astype(np.float32))
        return DequantTable(table, len(rows) - has_bias, has_bias, token)

    def emit(self, lw: Lowering, g: int, dst: int, acc: int, mt: int, nt: int, sv: int,
             row_scales: int, kept: dict[str, int]) -> None:
        """DEQUANT of input group g's partial (the bias with group 0) from the table's column
        tile at `sv`; per token, times the group's row scales; on the rows `kept` keeps."""
        fields: dict[str, int] = dict(kept)
        if g == 0:
            fields.update(has_bias=self.has_bias, bias_addr=sv + self.bias_row * nt * self.has_bias)
        if self.token:
            fields.update(has_row_scale=1, row_scale_addr=row_scales + g * mt)
        lw.emit("dequant", "sfu", dst_addr=dst, src_addr=acc, rows=mt, cols=nt,
                scale_addr=sv + (0 if self.token else g) * nt, **fields)


def _row_tile_input(lw: Lowering, x: DramTensor, preq: bool, token: bool, m0: int, mt: int,
                    k: int, k_tile: int, groups: tuple, deferred: DeferredRows | None = None
                    ) -> tuple[int, int, tuple[DramTensor, bool]]:
    """A row tile's ABUF input region, its row scales (-1 without per-token scales) and where
    input-column chunks come from (tensor, already INT8): the whole tile is quantized now
    unless the input is chunked (k_tile < k); chunked per-token rows are quantized whole into
    a DRAM copy first (`_token_copy`)."""
    source, row_scales = (x, preq), -1
    if k_tile < k and token:
        copy, row_scales = _token_copy(lw, x, m0, mt, k, groups, deferred)
        source = (copy, True)
    a = lw.alloc(Buffer.ABUF, mt * k_tile)
    if k_tile == k:
        row_scales = quantize_tile(lw, x, preq, token, m0, mt, k, a, groups, deferred)
    return a, row_scales, source


def quantize_tile(lw: Lowering, x: DramTensor, preq: bool, token: bool, m0: int, mt: int,
                  k: int, a: int, groups: tuple, deferred: DeferredRows | None = None) -> int:
    """Rows [m0, m0 + mt) of the linear's input into ABUF at `a` as INT8: LOADed when `x` is
    already its INT8 copy (`preq`), else QUANT or (per token) QUANT_ROWS. Returns the VBUF
    address of the tile's row scales (per token: one vector of mt per input run), else -1."""
    if token:
        row_scales = lw.alloc(Buffer.VBUF, mt * len(groups))
        _quantize_tokens(lw, x, m0, mt, k, a, groups, row_scales, deferred)
        return row_scales
    if preq:  # produced already quantized the way this linear quantizes it
        lw.load(Buffer.ABUF, a, x.address + m0 * k, mt, k)
    else:
        lw.quantize_rows(x, m0, mt, 0, k, a, groups)
    return -1


def _masked_input_chunk(lw: Lowering, op: transformer.LinearOp, x: DramTensor, k: int,
                        tiles: MaskTiles | None) -> int:
    """Input columns per GEMM pass: k, or for a row-masked linear whose [L, k] sequence does
    not fit ABUF the widest chunk that does (chunks stay within an input group: each group's
    partial has its own DEQUANT scale)."""
    a_cap = lw.capacity(Buffer.ABUF) * 3 // 4
    length = x.shape[1] if len(x.shape) > 2 else x.rows
    if tiles is None or op.keys is not None or length * k <= a_cap:
        return k
    chunk = a_cap // length
    if chunk < 1:
        raise fail(op, f"the {length} rows x {k} inputs of one sequence exceed the on-chip "
                   "buffers")
    return round_tile(chunk, k, lw.config.mac_rows)


def _chunked_gemms(lw: Lowering, op: transformer.LinearOp, component: str, tiles: MaskTiles,
                   x: DramTensor, preq: bool, group: tuple, *, acc: int, a: int, w: int,
                   m0: int, mt: int, k_tile: int, n0: int, nt: int, n_tile: int) -> None:
    """The GEMMs of one tile and input group (start, end, multiplier) over input-column chunks
    of at most `k_tile` (`_masked_input_chunk`), each chunk brought into ABUF at `a`, the later
    ones accumulating into `acc`."""
    start, end, multiplier = group
    for k0 in range(start, end, k_tile):
        kc = min(k_tile, end - k0)
        _quantize_columns(lw, x, preq, m0, mt, k0, kc, a, multiplier)
        _emit_gemms(lw, op, component, tiles, acc=acc, a=a, w=w + k0 * nt, m0=m0, mt=mt, k=kc,
                    width=kc, n0=n0, nt=nt, n_tile=n_tile, accumulate=int(k0 > start))


def _quantize_columns(lw: Lowering, x: DramTensor, preq: bool, m0: int, mt: int, k0: int,
                      kc: int, a: int, multiplier: float | None) -> None:
    """Input columns [k0, k0 + kc) of rows [m0, m0 + mt) into ABUF at `a` (packed rows of kc):
    LOADed from the INT8 copy, or QUANTized with the input group's multiplier."""
    if preq:
        lw.load(Buffer.ABUF, a, x.address + m0 * x.cols + k0, mt, kc, dram_stride=x.cols)
    else:
        assert multiplier is not None  # per-token copies are INT8 (`_row_tile_input`)
        lw.quantize_rows(x, m0, mt, k0, kc, a, float(multiplier))


def _token_copy(lw: Lowering, x: DramTensor, m0: int, mt: int, k: int,
                runs: tuple[tuple[int, int, None], ...],
                deferred: DeferredRows | None = None) -> tuple[DramTensor, int]:
    """Per-token INT8 copy of rows [m0, m0 + mt) of x for input-chunked GEMMs: a row's scale
    needs all k inputs, so whole rows are QUANT_ROWSed in staging chunks and STOREd to a DRAM
    scratch copy (the chunks are LOADed from it); the row scales (one vector of mt per input
    run) stay in VBUF for the DEQUANT."""
    copy = lw.scratch_tensor((x.rows, k), np.int8)
    row_scales = lw.alloc(Buffer.VBUF, mt * len(runs))
    chunk = max(1, min(lw.stage_rows(k, mt), lw.capacity(Buffer.ABUF) // 4 // k))
    staging = lw.alloc(Buffer.ABUF, chunk * k)
    for r in range(0, mt, chunk):
        rows = min(chunk, mt - r)
        _quantize_tokens(lw, x, m0 + r, rows, k, staging, runs, row_scales + r, deferred,
                         scale_stride=mt)
        lw.store_(Buffer.ABUF, staging, copy.address + (m0 + r) * k, rows, k)
    lw.free(Buffer.ABUF, staging)
    return copy, row_scales


def token_runs(lw: Lowering, op: transformer.LinearOp) -> tuple[tuple[int, int, None], ...]:
    """(first channel, end channel, None) of each input run of a per-token linear: each run
    gets its own row scales at run time."""
    k = shape_of(op.x)[-1]
    scales = None if op.group_scales is None else np.asarray(lw.store[op.group_scales.data])
    size = None if op.group_size is None else op.group_size.value.data
    return tuple((start, end, None) for start, end in input_runs(k, size, scales))


def _quantize_tokens(lw: Lowering, x: DramTensor, m0: int, mt: int, k: int, a: int,
                     runs: tuple[tuple[int, int, None], ...], row_scales: int,
                     deferred: DeferredRows | None = None, scale_stride: int | None = None
                     ) -> None:
    """LOAD FP32 rows [m0, m0 + mt) of x in chunks and QUANT_ROWS each input run into ABUF at
    `a` (packed rows of k), its per-row scales to `row_scales` + run * `scale_stride` (mt
    unless given) + row; `deferred`: x is that op's input, applied to each chunk first."""
    scale_stride = mt if scale_stride is None else scale_stride
    chunk = lw.stage_rows(k, mt)
    table = -1
    if deferred is not None:
        table = lw.alloc(Buffer.VBUF, deferred.table.cols)
        lw.load(Buffer.VBUF, table, deferred.table.address, 1, deferred.table.cols)
    kept = None if deferred is not None else rows_on_chip(lw, x, m0)
    if kept is not None:  # the input is kept on chip: QUANT_ROWS reads it there, all rows
        chunk = mt
    for r in range(0, mt, chunk):
        rows = min(chunk, mt - r)
        if kept is None:
            v = lw.alloc(Buffer.VBUF, rows * k)
            lw.load(Buffer.VBUF, v, x.address + (m0 + r) * k * F32, rows, k)
        else:
            v = kept + r * k
        if deferred is not None:
            deferred.apply(v, rows, k, table)
        for g, (start, end, _) in enumerate(runs):
            stride = k if end - start < k else 0
            lw.emit("quant_rows", "sfu", dst_addr=a + r * k + start, src_addr=v + start,
                    rows=rows, cols=end - start, src_stride=stride, dst_stride=stride,
                    scale_addr=row_scales + g * scale_stride + r)
        if kept is None:
            lw.free(Buffer.VBUF, v)
    if deferred is not None:
        lw.free(Buffer.VBUF, table)


def _chained_q(lw: Lowering, op: transformer.LinearOp, tiles: MaskTiles | None) -> bool:
    """Is `op` the masked Q linear lowered beside an SPLS chain at batch > 1 (placed by
    `follow` among the prediction's groups of batch elements)?"""
    return (tiles is not None and op.x is tiles.x and bool(tiles.chunks) and tiles.batch > 1
            and lw.group is not None)


def _acc_tile(lw: Lowering, size: int, row_tile: int, chained: bool) -> tuple[int, bool]:
    """An ACC tile and whether it is pinned (never freed): the chained Q linear's clear of the
    attention lowered after it (`chained_q_acc`), else the allocator's."""
    pinned = chained_q_acc(lw, size, row_tile) if chained else None
    return (lw.alloc(Buffer.ACC, size), False) if pinned is None else (pinned, True)


def _input_scales(lw: Lowering, op: transformer.LinearOp) -> list[float]:
    """The input scale of each input group of `op` (one: its per-tensor input scale)."""
    k = shape_of(op.x)[-1]
    scales = None if op.group_scales is None else np.asarray(lw.store[op.group_scales.data])
    size = None if op.group_size is None else op.group_size.value.data
    return [scale for _, _, scale in input_groups(k, size, scales, op.input_scale.value.data)]


def _linear_tiling(lw: Lowering, op: transformer.LinearOp, x: DramTensor, k: int, n: int,
                   group_count: int, tiles: MaskTiles | None) -> tuple[list[tuple[int, int]], int]:
    """(first row, rows) of each row tile, and the column tile width. Dense: tiles of all rows
    as large as the buffers allow; masked: one tile per batch element (the masks are per
    sequence), and with a key mask one column tile per head."""
    a_cap, w_cap = lw.capacity(Buffer.ABUF) * 3 // 4, lw.capacity(Buffer.WBUF) // HALF
    acc_cap, v_cap = lw.capacity(Buffer.ACC) // HALF, lw.capacity(Buffer.VBUF) // OUT_FRACTION
    if tiles is None:
        m = x.rows
        if lw.group is not None:  # lowered aside, beside an SPLS prediction's live tiles: the
            # ABUF they leave, ACC below the prediction's slots at the top of each bank
            a_cap = min(a_cap, lw.room(Buffer.ABUF))
            acc_cap -= acc_cap // PredictScratch.SLOT_FRACTION
        if k > a_cap or k > w_cap:
            raise CompileError(f"{op_label(op)}: input width {k} exceeds the on-chip buffers")
        m_tile = round_tile(min(m, a_cap // k, MAX_DIM), m, lw.config.mac_rows)
        # Several row tiles: two in flight (the next one's input prepared during this one's
        # GEMMs), halved only when two tiles would not fit ABUF together: more, smaller tiles
        # than needed move where later ops' ABUF tiles land, and an attention that fills ABUF
        # then finds no run long enough (test_spls_key_codes at 36 KiB).
        # (Beside an SPLS chain: two in the ABUF it leaves, or the next tile's input waits for
        # this tile's GEMMs: BERT-base 512's Q beside the score path.)
        if m_tile < m and 2 * m_tile * k > (a_cap if lw.group is not None
                                            else lw.capacity(Buffer.ABUF)):
            m_tile = round_tile(max(1, a_cap // 2 // k), m, lw.config.mac_rows)
        nt_limit = min(w_cap // k, acc_cap // m_tile,
                       v_cap // (2 * m_tile) if group_count > 1 else v_cap // m_tile)
        return ([(m0, min(m_tile, m - m0)) for m0 in range(0, m, m_tile)],
                round_tile(nt_limit, n, lw.config.mac_cols))
    batch, length = x.shape[0], x.shape[1]
    if group_count > 1:  # a later group's partial needs a second VBUF tile (`_dequant_group`)
        v_cap //= 2
    if (batch, length) != (tiles.batch, tiles.length):
        raise fail(op, f"rows {batch}x{length} do not match its masks")
    if k > w_cap:
        raise fail(op, f"the {length} rows x {k} inputs of one sequence exceed the on-chip buffers")
    if op.keys is not None:
        row_tiles = [(b * length, length) for b in range(batch)]
        head_width = n // tiles.heads  # one GEMM per head: the head's key mask is its row mask
        if head_width * k > w_cap or length * head_width > min(acc_cap, v_cap):
            raise fail(op, "a head's column block exceeds the on-chip buffers")
        return row_tiles, head_width
    n_limit = min(w_cap // k, acc_cap // length, v_cap // length)
    if n_limit < 1:
        raise fail(op, f"{length} rows exceed the on-chip accumulator/vector buffers")
    n_tile = round_tile(n_limit, n, lw.config.mac_cols)
    per_tile = _sequences_per_tile(lw, op, tiles, k, n, n_tile, (a_cap, acc_cap, v_cap, w_cap))
    return ([(b * length, min(per_tile, batch - b) * length)
             for b in range(0, batch, per_tile)], n_tile)


def _sequences_per_tile(lw: Lowering, op: transformer.LinearOp, tiles: MaskTiles, k: int,
                        n: int, n_tile: int, caps: tuple[int, int, int, int]) -> int:
    """Whole sequences in one row tile of a row-masked linear, so the kept rows of several
    batch elements fill the MAC array's rows together (each sequence's mask and reuse map are
    contiguous in MBUF): as many as fit within two array row tiles (2 R rows) and without a
    narrower column tile. Larger tiles pack kept rows better but wait for more sequences'
    predictions (digits ViT, 17 rows, batch 16 at threshold 0.8: 1 / 2 / 4 / 8 / 16 sequences
    a tile take 183.6k / 159.7k / 156.9k / 160.9k / 174.4k cycles; batch 8 with 2 / 4 / 8:
    85.0k / 86.0k / 93.2k). One when a GEMM runs per SPLS prediction chunk (the linear of the
    prediction's input); that linear's tile never spans two of the prediction's groups of
    batch elements (`spls_projection.group_elements`), so a group's attention waits for its
    own group's Q only (batch 2 / 4: one / two sequences a tile)."""
    length, (a_cap, acc_cap, v_cap, w_cap) = tiles.length, caps
    limit = tiles.batch
    if op.x is tiles.x and tiles.chunks:
        if tiles.chunks != [(0, length)]:
            return 1
        limit = group_elements(tiles.batch) or limit
    count = 1
    while (count < limit and (count + 1) * length <= 2 * lw.config.mac_rows
           and (count + 1) * length * k <= a_cap
           and (count + 1) * length <= MAX_DIM
           and round_tile(min(w_cap // k, acc_cap // ((count + 1) * length),
                              v_cap // ((count + 1) * length)), n, lw.config.mac_cols) == n_tile):
        count += 1
    return count


def _emit_gemms(lw: Lowering, op: transformer.LinearOp, component: str, tiles: MaskTiles | None,
                *, acc: int, a: int, w: int, m0: int, mt: int, k: int, width: int, n0: int,
                nt: int, n_tile: int, accumulate: int = 0) -> None:
    """The GEMM(s) of one tile: unmasked one GEMM (of one input group: `width` of the `k`
    input columns); with a mask one per SPLS prediction chunk of the sequence (one chunk when
    the linear does not read the prediction's input), each with its rows' mask."""
    if tiles is None:
        lw.emit("gemm", component, acc_addr=acc, a_addr=a, w_addr=w, m=mt, k=width, n=nt,
                a_stride=k if width < k else 0)
        return
    b = m0 // tiles.length
    if op.keys is not None:
        row_mask = tiles.key_mask + (b * tiles.heads + n0 // n_tile) * tiles.length
    else:
        row_mask = tiles.row_mask + b * tiles.length
    chunks = (tiles.chunks if op.keys is None and op.x is tiles.x and tiles.chunks
              and mt == tiles.length else [(0, mt)])  # whole sequences (`_sequences_per_tile`)
    strided = {"a_stride": k} if width < k else {}  # one input group's columns of k-wide rows
    for r0, rows in chunks:
        lw.emit("gemm", component, acc_addr=acc + r0 * nt, a_addr=a + r0 * k, w_addr=w, m=rows,
                k=width, n=nt, has_row_mask=1, row_mask_addr=row_mask + r0, **strided,
                **({"accumulate": 1} if accumulate else {}))
