"""Instruction selection of the modern-block ops: `transformer.rms_norm`, `silu`, `relu`,
`mul` and `rotary`, each on the SFU through the instructions of `runtime/isa_modern_blocks.py`.

Like layer norm and GELU (`lower_to_esact.py`), each works on FP32 row chunks: LOAD the
chunk's rows into VBUF, run the instruction in place, STORE the result's rows. RMSNORM loads
its gamma row once; ROPE loads, with each chunk of x rows, the cos / sin rows of the same
positions (chunks never straddle two batch elements, so row r of a chunk is position
l0 + r; tables computed per batch element are read at that element's rows). The rules register with `lowering_state.register_lowering` when this module is
imported (by `lower_to_esact.py`).
"""

from __future__ import annotations

import numpy as np
from esact_cc.dialects import transformer
from esact_cc.passes.lower_to_esact import rowwise
from esact_cc.passes.lowering_state import (
    F32,
    MAX_DIM,
    STAGE_FRACTION,
    Lowering,
    node_name,
    register_lowering,
)
from esact_cc.runtime.isa import Buffer
from xdsl.ir import SSAValue


def lower_rms_norm(lw: Lowering, op: transformer.RmsNormOp) -> None:
    gamma = lw.weight_array(op.gamma, "gamma")
    emit_rms_norm(lw, op.x, op.result, gamma, float(op.epsilon.value.data),
                  node_name(op) or "rms_norm")


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


RULES = {
    transformer.RmsNormOp: lower_rms_norm,
    transformer.SiluOp: lower_silu,
    transformer.ReluOp: lower_relu,
    transformer.MulOp: lower_mul,
    transformer.RotaryOp: lower_rotary,
}

for _op_type, _rule in RULES.items():
    register_lowering(_op_type, _rule)  # type: ignore[arg-type]
