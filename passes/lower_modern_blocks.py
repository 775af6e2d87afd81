"""Instruction selection of the modern-block ops: `transformer.rms_norm`, `silu`, `relu`,
`mul` and `rotary`, each on the SFU through the instructions of `runtime/isa_modern_blocks.py`.

Where they stand, like layer norm and GELU (`lower_to_esact.py`), each works on FP32 row
chunks: LOAD the chunk's rows into VBUF, run the instruction in place, STORE the result's rows.
RMSNORM loads its gamma row once; ROPE loads, with each chunk of x rows, the cos / sin rows of
the same positions (chunks never straddle two batch elements, so row r of a chunk is position
l0 + r; tables computed per batch element are read at that element's rows).

Most of the time they do not stand alone (docs/design.md section 3.1, "fused"): SiLU / ReLU,
the gate product and rotary run on the output tiles of the linear they follow
(`linear_epilogues.py`; rotary when a column tile holds whole heads and the tables are written
before the projection), and an RMSNorm read only by linears that quantize it per token is made
by each of them on the rows it LOADs (`DeferredRows`). The rules register with
`lowering_state.register_lowering` / `linear_epilogues.register_epilogue` when this module is
imported (by `lower_to_esact.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from esact_cc.dialects import transformer
from esact_cc.passes.linear_epilogues import Epilogue, register_epilogue
from esact_cc.passes.lower_to_esact import rowwise
from esact_cc.passes.lowering_state import (
    F32,
    MAX_DIM,
    STAGE_FRACTION,
    DeferredRows,
    Lowering,
    node_name,
    register_lowering,
    shape_of,
)
from esact_cc.runtime.isa import Buffer
from xdsl.ir import Operation, SSAValue


def lower_rms_norm(lw: Lowering, op: transformer.RmsNormOp) -> None:
    """RMSNORM of the rows, or, when every user is a linear quantizing its input per token,
    nothing here: each of them normalizes the rows it LOADs (`DeferredRows`), so the norm
    costs no DRAM round trip and no whole-tensor pass before the first GEMM (the norm's SFU
    passes are repeated per consumer)."""
    gamma = lw.weight_array(op.gamma, "gamma")
    eps = float(op.epsilon.value.data)
    name = node_name(op) or "rms_norm"
    if not _quantized_per_token_by_all(op.result):
        emit_rms_norm(lw, op.x, op.result, gamma, eps, name)
        return
    n = shape_of(op.x)[-1]

    def apply(rows_at: int, rows: int, cols: int, gamma_at: int) -> None:
        lw.emit("rmsnorm", "sfu", dst_addr=rows_at, src_addr=rows_at, rows=rows, cols=cols,
                gamma_addr=gamma_at, eps=eps)

    table = lw.constant(f"{name}.gamma", gamma.astype(np.float32).reshape(1, n))
    lw.deferred_rows[op.result] = DeferredRows(lw.f32_tensor(op.x, "x"), table, apply)


def _quantized_per_token_by_all(value: SSAValue) -> bool:
    """Whether every use of `value` is the input of an INT8 linear with per-token scales
    (QUANT_ROWS from FP32 rows LOADed on chip)."""
    uses = list(value.uses)
    return bool(uses) and all(
        isinstance(use.operation, transformer.LinearOp) and use.index == 0
        and use.operation.is_quantized and use.operation.token_scales is not None
        for use in uses)


def emit_rms_norm(lw: Lowering, source: SSAValue, result: SSAValue, gamma: np.ndarray,
                  eps: float, name: str) -> None:
    """RMSNORM of `source`'s rows into `result` with this gamma row and eps (also the rule of
    a norm op that is an RMS norm with other parameters)."""
    x = lw.f32_tensor(source, "x")
    n = x.cols
    table = lw.constant(f"{name}.gamma", gamma.astype(np.float32).reshape(1, n))
    g = lw.alloc(Buffer.VBUF, n)
    lw.load(Buffer.VBUF, g, table.address, 1, n)

    def body(addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("rmsnorm", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols,
                gamma_addr=g, eps=eps)

    rowwise(lw, [x], result, body)
    lw.free(Buffer.VBUF, g)


def lower_silu(lw: Lowering, op: transformer.SiluOp) -> None:
    def body(addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("silu", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols)

    rowwise(lw, [lw.f32_tensor(op.x, "x")], op.result, body)


def lower_relu(lw: Lowering, op: transformer.ReluOp) -> None:
    def body(addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("relu", "sfu", dst_addr=addrs[0], src_addr=addrs[0], rows=rows, cols=cols)

    rowwise(lw, [lw.f32_tensor(op.x, "x")], op.result, body)


def lower_mul(lw: Lowering, op: transformer.MulOp) -> None:
    def body(addrs: list[int], rows: int, cols: int) -> None:
        lw.emit("mul", "sfu", dst_addr=addrs[0], a_addr=addrs[0], b_addr=addrs[1], rows=rows,
                cols=cols)

    rowwise(lw, [lw.f32_tensor(op.lhs, "lhs"), lw.f32_tensor(op.rhs, "rhs")], op.result, body)


def lower_rotary(lw: Lowering, op: transformer.RotaryOp) -> None:
    x = lw.f32_tensor(op.x, "x")
    cos, sin = lw.f32_tensor(op.cos, "cos"), lw.f32_tensor(op.sin, "sin")
    batch, length, width = x.shape
    rotated = op.rotated
    per_batch = len(cos.shape) == 3 and cos.shape[0] == batch > 1  # one table per element
    per_row = width + 2 * rotated
    chunk = max(1, min(length, MAX_DIM, lw.capacity(Buffer.VBUF) // STAGE_FRACTION // per_row))
    for b in range(batch):
        for l0 in range(0, length, chunk):
            n = min(chunk, length - l0)
            r0 = b * length + l0
            v = lw.alloc(Buffer.VBUF, n * width)
            c = lw.alloc(Buffer.VBUF, n * rotated)
            s = lw.alloc(Buffer.VBUF, n * rotated)
            lw.load(Buffer.VBUF, v, x.address + r0 * width * F32, n, width)
            t0 = (r0 if per_batch else l0) * rotated * F32
            lw.load(Buffer.VBUF, c, cos.address + t0, n, rotated)
            lw.load(Buffer.VBUF, s, sin.address + t0, n, rotated)
            lw.emit("rope", "sfu", dst_addr=v, src_addr=v, rows=n, cols=width, cos_addr=c,
                    sin_addr=s, head_dim=width // op.heads, rotary_dim=rotated)
            lw.write_tile(op.result, v, r0, n, 0, width)
            lw.free(Buffer.VBUF, v, c, s)


# ----------------------------------------------------------------------------- epilogues
# Fused into the output tiles of the linear they consume alone (`linear_epilogues.py`):
# the tile is still in VBUF, so the op costs its SFU passes only, no DRAM round trip, and the
# next linear's input rows are ready tile by tile instead of after a whole-tensor pass. Their
# instructions take no row mask: they run on every row of the tile (`kept` is not used).


def _unary_epilogue(name: str) -> Callable[..., Epilogue]:
    def rule(lw: Lowering, linear: transformer.LinearOp, value: SSAValue, op: Operation,
             n_tile: int) -> Epilogue:
        def body(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
            lw.emit(name, "sfu", dst_addr=o, src_addr=o, rows=mt, cols=nt)
        return body
    return rule


def mul_epilogue(lw: Lowering, linear: transformer.LinearOp, value: SSAValue,
                 op: transformer.MulOp, n_tile: int) -> Epilogue | None:
    """The gate product of a gated FFN on the tiles of whichever projection is lowered second
    (the up projection, or the gate's after its activation): the other factor, lowered before,
    is LOADed tile by tile."""
    lhs_is_linear = op.lhs is value
    other = op.rhs if lhs_is_linear else op.lhs
    if other is value or shape_of(other) != shape_of(value) or \
            not lw.defined_before(other, linear):
        return None
    t = lw.f32_tensor(other, "rhs" if lhs_is_linear else "lhs")

    def body(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
        r = lw.alloc(Buffer.VBUF, mt * nt)
        lw.load(Buffer.VBUF, r, t.address + (m0 * t.cols + n0) * F32, mt, nt,
                dram_stride=t.cols * F32)
        a, b = (o, r) if lhs_is_linear else (r, o)
        lw.emit("mul", "sfu", dst_addr=o, a_addr=a, b_addr=b, rows=mt, cols=nt)
        lw.free(Buffer.VBUF, r)

    return body


def rotary_epilogue(lw: Lowering, linear: transformer.LinearOp, value: SSAValue,
                    op: transformer.RotaryOp, n_tile: int) -> Epilogue | None:
    """ROPE on the Q / K projection's tiles when each column tile holds whole heads (the
    cos / sin rows of the tile's positions are LOADed with it) and the tables are there
    before it. Not on a key-masked linear: its rows outside the key mask are not computed."""
    if op.x is not value or linear.keys is not None or not (
            lw.defined_before(op.cos, linear) and lw.defined_before(op.sin, linear)):
        return None  # (tables computed on the host after the linear: ROPE where it stands)
    cos, sin = lw.f32_tensor(op.cos, "cos"), lw.f32_tensor(op.sin, "sin")
    batch, length, width = shape_of(value)
    head_dim = width // op.heads
    if n_tile % head_dim:
        return None
    rotated = op.rotated
    per_batch = len(cos.shape) == 3 and cos.shape[0] == batch > 1

    # cos / sin rows in chunks of at most an FP32 staging chunk together (a masked linear's
    # tile is a whole sequence)
    chunk = max(1, lw.capacity(Buffer.VBUF) // STAGE_FRACTION // (2 * rotated))

    def body(o: int, m0: int, mt: int, n0: int, nt: int, kept: dict[str, int]) -> None:
        for c0 in range(m0, m0 + mt, chunk):
            rows = min(chunk, m0 + mt - c0)
            c = lw.alloc(Buffer.VBUF, rows * rotated)
            s = lw.alloc(Buffer.VBUF, rows * rotated)
            r0 = c0
            while r0 < c0 + rows:  # one LOAD each per batch element the rows span
                end = min(c0 + rows, (r0 // length + 1) * length)
                t0 = (r0 if per_batch else r0 % length) * rotated * F32
                lw.load(Buffer.VBUF, c + (r0 - c0) * rotated, cos.address + t0, end - r0, rotated)
                lw.load(Buffer.VBUF, s + (r0 - c0) * rotated, sin.address + t0, end - r0, rotated)
                r0 = end
            lw.emit("rope", "sfu", dst_addr=o + (c0 - m0) * nt, src_addr=o + (c0 - m0) * nt,
                    rows=rows, cols=nt, cos_addr=c, sin_addr=s, head_dim=head_dim,
                    rotary_dim=rotated)
            lw.free(Buffer.VBUF, c, s)

    return body


EPILOGUES = {
    transformer.SiluOp: _unary_epilogue("silu"),
    transformer.ReluOp: _unary_epilogue("relu"),
    transformer.MulOp: mul_epilogue,
    transformer.RotaryOp: rotary_epilogue,
}

RULES = {
    transformer.RmsNormOp: lower_rms_norm,
    transformer.SiluOp: lower_silu,
    transformer.ReluOp: lower_relu,
    transformer.MulOp: lower_mul,
    transformer.RotaryOp: lower_rotary,
}

for _op_type, _rule in RULES.items():
    register_lowering(_op_type, _rule)  # type: ignore[arg-type]
for _op_type, _epilogue in EPILOGUES.items():
    register_epilogue(_op_type, _epilogue)  # type: ignore[arg-type]
