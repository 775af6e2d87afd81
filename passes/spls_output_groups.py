"""The output projection of an SPLS layer per prediction row group, while the BPU predicts the
next chunks (docs/design.md section 6, "Work beside the prediction").

When the layer's attention ran beside the projection (`dense-prefix=attention`), its output
exists before the first decision, so O's GEMM for the rows of prediction group g (the masked
Q linear's groups of whole chunks, `MaskTiles.chunks`) needs only the decisions of group g.
`OutputGroups` lowers the row-masked O linear, its fused residual ADD and the layer norm after
it group by group, emitted into the chain one chunk after the group's last (so their SFU work
queues behind that chunk's DEQUANT / SOFTMAX, not in front of it):
- before the chain: O's weight column tiles (resident: one WBUF bank each, never reloaded),
  their DEQUANT rows, and O's input quantization for all rows, selected there (its tiles are
  reserved beside the chain's) but placed after the chain's first chunk (`place "append"`),
  behind the pieces of the early ops that overran the projection (`sink`): in the in-order SFU
  queue chunk 0's DEQUANT / SOFTMAX then go first;
- per group: per column tile GEMM (computed-row mask) -> DEQUANT into that tile's [L, nt]
  block, kept in VBUF for the whole sequence; SCATTER_ROWS over the blocks' rows so far (a
  reused row's representative is a computed row before it, in this group or an earlier one;
  earlier rows are rewritten with the values they hold); then the group's rows: residual LOAD,
  ADD (the representative's O row + the row's own residual, as the fused epilogue adds them),
  LAYERNORM, and the STOREs of the norm's output (and of the sum when another op reads it).
Every value is computed by the same instructions on the same operands as the whole-sequence
lowering (GEMM rows are independent, DEQUANT / ADD / LAYERNORM are per row or element), so the
output is bit-identical. Applies when the pieces fit beside the chain's regions, O has one
input run and its residual ADD feeds only a layer norm; otherwise the ops are lowered after
the chain as before (`plan` returns None and leaves the lowering state as it found it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from esact_cc.dialects import transformer
from esact_cc.passes.lower_linear import DequantTable, linear_input_format, quantize_tile
from esact_cc.passes.lower_masked_inputs import done_with
from esact_cc.passes.lowering_state import (
    F32,
    HALF,
    Lowering,
    MaskTiles,
    load_gamma_beta,
    round_tile,
)
from esact_cc.passes.spls_scratch import PredictScratch
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.isa import Buffer
from xdsl.ir import Operation, SSAValue


@dataclass
class OutputGroups:
    """The O linear, residual ADD and layer norm of one SPLS layer, lowered per row group."""

    linear: transformer.LinearOp
    add: transformer.AddOp
    norm: transformer.LayerNormOp
    masks: MaskTiles
    groups: list[tuple[int, int]]
    """(first row, rows) of each group: the prediction chunks the masked GEMMs take together."""
    tiles: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(first column, columns, WBUF weights, VBUF DEQUANT rows) of each resident column tile."""
    regions: dict[str, int] = field(default_factory=dict)
    """VBUF / ABUF / ACC addresses: blocks, rows, gamma_beta, input, row_scales, acc<j>."""
    early: int | None = None
    """The placement group of the ops lowered beside the projection (its `sink` goes here)."""
    emitted: int = 0
    """Groups emitted so far (one batch element)."""
    dequant: DequantTable | None = None
    preparation: int = 0
    """The placement group of O's input preparation (selected before the chain)."""
    started: bool = False

    @staticmethod
    def plan(lw: Lowering, masks: MaskTiles, linear: Operation | None,
             acc_slots: PredictScratch, early: int | None) -> OutputGroups | None:
        """The row-group lowering of `linear` (the layer's O) when it applies and its resident
        tiles fit beside the chain's live regions (reserved now, before the chain), else None
        with the lowering state unchanged."""
        found = _output_ops(linear, masks)
        if found is None or not acc_slots.slots or masks.batch != 1:
            return None
        snapshot = (copy.deepcopy(lw.rings), len(lw.stream), dict(lw.physical),
                    len(lw.vbuf_sizes), lw.counters["group"])
        plan = OutputGroups(*found, masks, list(masks.chunks), early=early)
        try:
            plan._reserve(lw, acc_slots)
        except CompileError:
            lw.rings.clear()
            lw.rings.update(snapshot[0])
            del lw.stream[snapshot[1]:]
            lw.physical = snapshot[2]
            del lw.vbuf_sizes[snapshot[3]:]
            lw.counters["group"] = snapshot[4]
            return None
        return plan

    def _reserve(self, lw: Lowering, acc_slots: PredictScratch) -> None:
        """`_reserve_tiles` with O's location on its instructions."""
        with _located(lw, self.linear):
            self._reserve_tiles(lw, acc_slots)

    def _reserve_tiles(self, lw: Lowering, acc_slots: PredictScratch) -> None:
        """Resident tiles: weights and DEQUANT rows per column tile, O's input of all rows
        (its quantization held aside for `start`), the [L, nt] blocks, one group's rows, the
        norm's gamma / beta, and one ACC tile per column tile below the prediction's slots at
        the top of each bank."""
        op, r, length = self.linear, self.regions, self.masks.length
        x = lw.f32_tensor(op.x, "x")
        w = lw.tensor_of(op.weight)
        k, n = w.shape
        token, groups, x8 = linear_input_format(lw, op)
        if len(groups) != 1 or w.dtype != np.int8:
            raise CompileError("one input run only")
        dequant = DequantTable.of(lw, op, n)
        rows = max(count for _, count in self.groups)
        n_tile = round_tile(lw.capacity(Buffer.WBUF) // HALF // k, n, lw.config.mac_cols)
        bank = getattr(lw.rings[Buffer.ACC], "bank_size", lw.capacity(Buffer.ACC))
        if -(-n // n_tile) > 2 or rows * n_tile > bank - acc_slots.size:
            raise CompileError("O's column tiles exceed the two WBUF / ACC banks")
        for n0 in range(0, n, n_tile):
            wt, sv = lw.load_weight_tile(w, dequant.table, n0, n_tile)
            self.tiles.append((n0, min(n_tile, n - n0), wt, sv))
        for j in range(len(self.tiles)):
            r[f"acc{j}"] = lw.alloc(Buffer.ACC, rows * n_tile)
        r["blocks"] = lw.alloc(Buffer.VBUF, length * n)
        r["rows"] = lw.alloc(Buffer.VBUF, rows * n)
        with _located(lw, self.norm):
            r["gamma_beta"] = load_gamma_beta(lw, self.norm, n)
        r["input"] = lw.alloc(Buffer.ABUF, length * k)
        lw.counters["group"] += 1  # selected now (its tiles fit), placed by `start`
        self.preparation = lw.group = lw.counters["group"]
        try:
            r["row_scales"] = quantize_tile(lw, x if x8 is None else x8, x8 is not None,
                                             token, 0, length, k, r["input"], groups)
        finally:
            lw.group = None
        lw.place("aside", self.preparation)
        self.dequant = dequant

    def start(self, lw: Lowering) -> None:
        """After the chain's first chunk: the pieces of the early ops expected after the
        projection (`sink`: the attention's tail when it overran the projection), then O's
        input preparation. In the in-order SFU queue both then follow chunk 0's DEQUANT /
        SOFTMAX instead of holding them (and the first decision) behind the attention."""
        if self.started:
            return
        self.started = True
        if self.early is not None:
            lw.place("sink", self.early)
        lw.place("append", self.preparation)

    def emit_ready(self, lw: Lowering, decided_before: int) -> None:
        """Emit the groups whose rows all lie before `decided_before` (the first row of the
        chunk just emitted: one chunk of lag, see the module docstring)."""
        self.start(lw)
        while self.emitted < len(self.groups) and sum(self.groups[self.emitted]) <= decided_before:
            self._emit_group(lw, *self.groups[self.emitted])
            self.emitted += 1

    def finish(self, lw: Lowering) -> None:
        """The remaining groups, then the resident tiles are released and the three ops are
        done (skipped where they stand)."""
        self.start(lw)
        while self.emitted < len(self.groups):
            self._emit_group(lw, *self.groups[self.emitted])
            self.emitted += 1
        r = self.regions
        for _, _, wt, sv in self.tiles:
            lw.free(Buffer.WBUF, wt)
            lw.free(Buffer.VBUF, sv)
        lw.free(Buffer.ACC, *(r[f"acc{j}"] for j in range(len(self.tiles))))
        lw.free(Buffer.VBUF, r["blocks"], r["rows"], r["gamma_beta"])
        if r["row_scales"] >= 0:
            lw.free(Buffer.VBUF, r["row_scales"])
        lw.free(Buffer.ABUF, r["input"])
        lw.fused.update((self.linear, self.add, self.norm))
        done_with(lw, self.linear, self.masks)

    def _emit_group(self, lw: Lowering, r0: int, rows: int) -> None:
        op, r, m = self.linear, self.regions, self.masks
        length, n = m.length, self.dequant_width
        k = lw.tensor_of(op.weight).shape[0]
        with _located(lw, op):
            for j, (n0, nt, wt, sv) in enumerate(self.tiles):
                block, acc = r["blocks"] + n0 * length, r[f"acc{j}"]
                lw.emit("gemm", lw.component_of(op), acc_addr=acc, a_addr=r["input"] + r0 * k,
                        w_addr=wt, m=rows, k=k, n=nt, has_row_mask=1,
                        row_mask_addr=m.row_mask + r0)
                assert self.dequant is not None
                self.dequant.emit(lw, 0, block + r0 * nt, acc, rows, nt, sv,
                                  r["row_scales"] + r0,
                                  {"has_row_mask": 1, "row_mask_addr": m.row_mask + r0})
                lw.emit("scatter_rows", "sfu", buf=Buffer.VBUF, dst_addr=block, src_addr=block,
                        rows=r0 + rows, cols=nt, map_addr=m.reuse_map)
        with _located(lw, self.add):
            residual = lw.f32_tensor(_residual(self.add, op), "residual")
            lw.load(Buffer.VBUF, r["rows"], residual.address + r0 * n * F32, rows, n)
            for n0, nt, _, _ in self.tiles:
                at = r["rows"] + n0
                lw.emit("add", "sfu", dst_addr=at, a_addr=r["blocks"] + n0 * length + r0 * nt,
                        b_addr=at, rows=rows, cols=nt, dst_stride=n, b_stride=n)
            if any(u.operation is not self.norm for u in self.add.result.uses):
                lw.write_tile(self.add.result, r["rows"], r0, rows, 0, n)
        with _located(lw, self.norm):
            gb = r["gamma_beta"]
            lw.emit("layernorm", "sfu", dst_addr=r["rows"], src_addr=r["rows"], rows=rows,
                    cols=n, gamma_addr=gb, beta_addr=gb + n,
                    eps=float(self.norm.epsilon.value.data))
            lw.write_tile(self.norm.result, r["rows"], r0, rows, 0, n)

    @property
    def dequant_width(self) -> int:
        return sum(nt for _, nt, _, _ in self.tiles)


class NoOutputGroups:
    """O lowered where it stands (`OutputGroups.plan` found it does not apply)."""

    started = False

    def emit_ready(self, lw: Lowering, decided_before: int) -> None:
        pass

    def finish(self, lw: Lowering) -> None:
        pass


class _located:
    """Instructions emitted inside carry `op`'s location and layer (as `Lowering.lower_op`)."""

    def __init__(self, lw: Lowering, op: Operation):
        self.lw, self.op = lw, op

    def __enter__(self) -> None:
        self.saved = self.lw.current, self.lw.layer
        self.lw.current, self.lw.layer = self.op, self.lw.stamps[self.op].layer

    def __exit__(self, *exc: object) -> None:
        self.lw.current, self.lw.layer = self.saved


def _output_ops(linear: Operation | None, masks: MaskTiles
                ) -> tuple[transformer.LinearOp, transformer.AddOp, transformer.LayerNormOp] | None:
    """(O, its residual ADD, the layer norm of the sum) when O reads these masks' reuse map,
    is O's only user the ADD with a residual defined before O, and the norm the ADD's (first)
    user; else None."""
    if not (isinstance(linear, transformer.LinearOp) and linear.is_quantized
            and linear.rows is not None and masks.chunks and linear.keys is None):
        return None
    uses = list(linear.result.uses)
    add = uses[0].operation if len(uses) == 1 else None
    if not isinstance(add, transformer.AddOp) or _residual(add, linear) is linear.result:
        return None
    norms = [u.operation for u in add.result.uses
             if isinstance(u.operation, transformer.LayerNormOp)]
    if len(norms) != 1 or norms[0].x is not add.result:
        return None
    residual = _residual(add, linear).owner
    block = linear.parent_block()
    if isinstance(residual, Operation) and residual.parent_block() is block and \
            block.get_operation_index(residual) > block.get_operation_index(linear):
        return None
    return linear, add, norms[0]


def _residual(add: transformer.AddOp, linear: Operation) -> SSAValue:
    return add.rhs if add.lhs is linear.results[0] else add.lhs
