"""Ops fused into a linear's output tiles (instruction selection, `lower_linear.py`).

A GELU, a residual add, or an op whose lowering module registered an epilogue rule
(`register_epilogue`: SiLU / ReLU, the gated FFN's product and rotary, `lower_modern_blocks.py`)
that is the only user of the linear's result runs on each FP32 output tile while it is still
in VBUF, before the tile is written; so does the next op on that op's result, and so on. The
fused ops are marked lowered (`Lowering.fused`) and the tiles are written as the last one's
result: no DRAM round trip, and the next linear's rows are ready tile by tile instead of after a
whole-tensor pass.
"""

from __future__ import annotations

from collections.abc import Callable

from esact_cc.dialects import transformer
from esact_cc.passes.lowering_state import F32, Lowering
from esact_cc.passes.on_chip_activations import rows_on_chip
from esact_cc.quantized_kernels import GELU_MODES
from esact_cc.runtime.isa import Buffer
from xdsl.ir import Operation, SSAValue

Epilogue = Callable[[int, int, int, int, int, dict[str, int]], None]
"""epilogue(vbuf, first row, rows, first column, columns, kept): applied to each FP32 output
tile of a linear in VBUF before it is written. `kept` is empty, or the row-mask fields
(has_row_mask, row_mask_addr) of a row-masked linear's kept rows when nothing reads its reused
rows: an SFU step that takes a row mask then runs on those rows only (docs/design.md 6.3)."""
EpilogueRule = Callable[[Lowering, transformer.LinearOp, SSAValue, Operation, int],
                        "Epilogue | None"]
_EPILOGUES: dict[type[Operation], EpilogueRule] = {}


def register_epilogue(op_type: type[Operation], rule: EpilogueRule) -> None:
    """Fuse an `op_type` op that is the only user of a linear's result (or of an op fused
    into it) into the linear's output tiles: `rule(lowering, linear, value, op, column_tile)`
    returns the tile epilogue applying `op` to the tiles holding `value`, or None when it
    cannot be fused (it is then lowered by its own rule). One rule per op type."""
    if op_type in _EPILOGUES:
        raise ValueError(f"an epilogue for {op_type.__name__} is already registered")
    _EPILOGUES[op_type] = rule


def linear_epilogue(lw: Lowering, op: transformer.LinearOp,
                    column_tile: int) -> tuple[Epilogue | None, SSAValue]:
    """The chain of ops fused into the linear's tiles (`column_tile` wide). Returns the
    epilogue (None: nothing fused) and the value the tiles are written as."""
    bodies: list[Epilogue] = []
    value = op.result
    while len(uses := list(value.uses)) == 1:
        user = uses[0].operation
        body = None if user.parent_block() is not op.parent_block() else \
            _tile_epilogue(lw, op, value, user, column_tile)
        if body is None:
            break
        lw.fused.add(user)
        bodies.append(body)
        value = user.result
    if len(bodies) < 2:
        return (bodies[0] if bodies else None), value

    def chain(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
        for body in bodies:
            body(o, m0, mt, n0, nt, kept)

    return chain, value


def _tile_epilogue(lw: Lowering, op: transformer.LinearOp, value: SSAValue, user: Operation,
                   column_tile: int) -> Epilogue | None:
    """`user` applied to the linear's tiles holding `value`, or None if it cannot be."""
    if isinstance(user, transformer.GeluOp):
        mode = GELU_MODES[user.approximate.data]

        def gelu(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
            lw.emit("gelu", "sfu", dst_addr=o, src_addr=o, rows=mt, cols=nt, mode=mode, **kept)

        return gelu
    if isinstance(user, transformer.AddOp):
        other = user.rhs if user.lhs is value else user.lhs
        if other is value or not lw.defined_before(other, op):
            return None
        residual = lw.f32_tensor(other, "residual")

        def add(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
            resident = rows_on_chip(lw, residual, m0, n0)
            if resident is not None:  # the residual is kept on chip: read where it is
                lw.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=resident, rows=mt, cols=nt,
                        b_stride=residual.cols if nt < residual.cols else 0, **kept)
                return
            r = lw.alloc(Buffer.VBUF, mt * nt)
            lw.load(Buffer.VBUF, r, residual.address + (m0 * residual.cols + n0) * F32, mt, nt,
                    dram_stride=residual.cols * F32)
            lw.emit("add", "sfu", dst_addr=o, a_addr=o, b_addr=r, rows=mt, cols=nt, **kept)
            lw.free(Buffer.VBUF, r)

        return add
    rule = _EPILOGUES.get(type(user))
    return None if rule is None else rule(lw, op, value, user, column_tile)
