"""SFU instructions of modern Transformer blocks: RMSNORM, SILU, RELU, MUL (the gate product of
a gated FFN) and ROPE (rotary position embedding), with their functional kernels and costs.

They are registered with `isa.register_instruction` when `runtime/isa.py` is imported, so every
tool (compiler, esact-run, assembler, the `esact` dialect) sees them like the built-ins. The
arithmetic is done in float64 and rounded once to float32, like every SFU instruction; the
row functions below are also the reference interpreter's definition of `transformer.rms_norm`,
`silu`, `relu`, `mul` and `rotary` (`esact_cc/interpreter/interpret_transformer_ops.py`), so the
binary's outputs equal the interpreter's bit for bit.

Rotary embedding runs on the SFU rather than on a dedicated unit: it is two multiply-adds per
element against cos / sin rows that the compiler loads into VBUF with the activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .isa_costs import sfu_cost
from .isa_extension import addr, dim, field_value, register_once, stride
from .isa_fields import FLOAT_BITS, Buffer, FieldKind, FieldSpec, Queue, Unit, bits_float
from .isa_spec import Operand
from .isa_table import define_instruction

# SFU lane passes per element (the built-ins' table is `isa_costs.SFU_PASSES`).
RMSNORM_PASSES = 3  # square-sum, reciprocal square root, scale
SILU_PASSES = 2  # exp, divide-multiply
ROPE_PASSES = 2  # two multiply-adds per rotated element


# ----------------------------------------------------------------------------- row kernels


def rms_norm_rows(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * gamma over the last axis, float64, rounded to float32."""
    x64 = np.asarray(x, np.float64)
    mean_square = np.mean(x64 * x64, axis=-1, keepdims=True)
    y = x64 / np.sqrt(mean_square + eps) * np.asarray(gamma, np.float64)
    return y.astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) = x / (1 + exp(-x)), float64, rounded to float32."""
    x64 = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return (x64 / (1.0 + np.exp(-x64))).astype(np.float32)


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) in float32 (exact; NaN stays NaN)."""
    x32 = np.asarray(x, np.float32)
    return np.where(x32 < 0, np.float32(0), x32)


def mul_f32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise product, float64 (exact for float32 inputs), rounded to float32."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64)).astype(np.float32)


def rope_rows(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, head_dim: int,
              rotary_dim: int) -> np.ndarray:
    """Rotary embedding of rows x [N, H * head_dim] with per-row tables cos, sin
    [N, rotary_dim]: in each head, the first rotary_dim channels r become
    r * cos + concat(-r[half:], r[:half]) * sin; the others pass through."""
    x64 = np.asarray(x, np.float64)
    rows, cols = x64.shape
    heads = x64.reshape(rows, cols // head_dim, head_dim)
    out = heads.copy()
    half = rotary_dim // 2
    c = np.asarray(cos, np.float64)[:, None, :]
    s = np.asarray(sin, np.float64)[:, None, :]
    first, second = heads[..., :half], heads[..., half:rotary_dim]
    out[..., :half] = first * c[..., :half] - second * s[..., :half]
    out[..., half:rotary_dim] = second * c[..., half:] + first * s[..., half:]
    return out.reshape(rows, cols).astype(np.float32)


# ----------------------------------------------------------------------------- table rows


def _mat(address: str, rows: str, cols: str, access: str, row_stride: str | None = None) -> Operand:
    return Operand(address, Buffer.VBUF, field_value(rows), field_value(cols), access, row_stride)


_ROWWISE = (dim("rows"), dim("cols"), stride("src_stride"), stride("dst_stride"))
_SRC_DST = (_mat("src_addr", "rows", "cols", "r", "src_stride"),
            _mat("dst_addr", "rows", "cols", "w", "dst_stride"))

RMSNORM = define_instruction(
    "rmsnorm", 0x29, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32"), addr("src_addr", "VBUF fp32"), *_ROWWISE,
     addr("gamma_addr", "VBUF: cols"), FieldSpec("eps", FLOAT_BITS, FieldKind.FLOAT32)),
    (*_SRC_DST, Operand("gamma_addr", Buffer.VBUF, lambda f: 1, field_value("cols"), "r")),
    sfu_cost(RMSNORM_PASSES),
    "Per row in float64: dst = x / sqrt(mean(x^2) + eps) * gamma.")

SILU = define_instruction(
    "silu", 0x2A, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32"), addr("src_addr", "VBUF fp32"), *_ROWWISE),
    _SRC_DST, sfu_cost(SILU_PASSES),
    "dst = x / (1 + exp(-x)) in float64 (SiLU).")

RELU = define_instruction(
    "relu", 0x2D, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32"), addr("src_addr", "VBUF fp32"), *_ROWWISE),
    _SRC_DST, sfu_cost(1),
    "dst = max(src, 0).")

MUL = define_instruction(
    "mul", 0x2B, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32"), addr("a_addr", "VBUF fp32"), addr("b_addr", "VBUF fp32"),
     dim("rows"), dim("cols"), stride("dst_stride"), stride("a_stride"), stride("b_stride")),
    (_mat("a_addr", "rows", "cols", "r", "a_stride"), _mat("b_addr", "rows", "cols", "r", "b_stride"),
     _mat("dst_addr", "rows", "cols", "w", "dst_stride")),
    sfu_cost(1),
    "dst = float32(a * b) (the gate product of a gated FFN).")

ROPE = define_instruction(
    "rope", 0x2C, Queue.SFU, Unit.SFU,
    (addr("dst_addr", "VBUF fp32"), addr("src_addr", "VBUF fp32"), *_ROWWISE,
     addr("cos_addr", "VBUF: rows x rotary_dim, packed"),
     addr("sin_addr", "VBUF: rows x rotary_dim, packed"),
     dim("head_dim", "channels per head; cols is a multiple"),
     dim("rotary_dim", "rotated channels at the start of each head, even")),
    (*_SRC_DST, _mat("cos_addr", "rows", "rotary_dim", "r"), _mat("sin_addr", "rows", "rotary_dim", "r")),
    sfu_cost(ROPE_PASSES),
    """Per row r and head h (channels [h * head_dim, (h + 1) * head_dim)), float64: the first
    rotary_dim channels x become x * cos[r] + concat(-x[half:], x[:half]) * sin[r]
    (half = rotary_dim / 2); the rest are copied.""")


# ----------------------------------------------------------------------------- kernels


def _rows_cols(f: Mapping[str, int]) -> int:
    return f["rows"] * f["cols"]


def _run_rmsnorm(machine: Any, f: Mapping[str, int]) -> None:
    y = rms_norm_rows(machine.view("src_addr"), machine.vector("gamma_addr"),
                      bits_float(f["eps"]))
    machine.view("dst_addr")[...] = y
    machine.work.sfu_elements = _rows_cols(f)


def _run_silu(machine: Any, f: Mapping[str, int]) -> None:
    machine.view("dst_addr")[...] = silu(machine.view("src_addr"))
    machine.work.sfu_elements = _rows_cols(f)


def _run_relu(machine: Any, f: Mapping[str, int]) -> None:
    machine.view("dst_addr")[...] = relu(machine.view("src_addr"))
    machine.work.sfu_elements = _rows_cols(f)


def _run_mul(machine: Any, f: Mapping[str, int]) -> None:
    machine.view("dst_addr")[...] = mul_f32(machine.view("a_addr"), machine.view("b_addr"))
    machine.work.sfu_elements = _rows_cols(f)


def _run_rope(machine: Any, f: Mapping[str, int]) -> None:
    head_dim, rotary_dim = f["head_dim"], f["rotary_dim"]
    if f["cols"] % head_dim:
        raise machine.fail(f"field 'head_dim' = {head_dim}: does not divide cols {f['cols']}")
    if rotary_dim % 2 or rotary_dim > head_dim:
        raise machine.fail(f"field 'rotary_dim' = {rotary_dim}: must be even and <= head_dim "
                           f"{head_dim}")
    machine.view("dst_addr")[...] = rope_rows(machine.view("src_addr"), machine.view("cos_addr"),
                                              machine.view("sin_addr"), head_dim, rotary_dim)
    machine.work.sfu_elements = f["rows"] * (f["cols"] // head_dim) * rotary_dim


def register() -> None:
    """Add the five instructions to the table (once; `runtime/isa.py` calls this)."""
    register_once(((RMSNORM, _run_rmsnorm), (SILU, _run_silu), (RELU, _run_relu),
                   (MUL, _run_mul), (ROPE, _run_rope)))
