"""Numpy semantics of every ONNX op the `onnx` dialect holds (float32, like onnxruntime).

`ONNX_KERNELS[op_type](inputs, attrs, n_outputs) -> outputs` is the one definition of what an
ONNX op computes in esact-cc: the reference interpreter runs `onnx.<OpType>` ops through it,
and the frontend folds constant (shape-only) subgraphs through it. Ops without a numpy kernel
here (the host-only ops of `dialects/onnx_host_op_types.py`), and the forms a kernel raises
`OnnxruntimeOnly` for, run on onnxruntime (`onnxruntime_kernel.py`) at the module's opset.
`inputs` has one entry per ONNX input position (None for an omitted optional input); `attrs` holds plain Python values
(int, float, str, lists, numpy arrays for tensor attributes).

Registration with the interpreter (`onnx.<OpType>` and `onnx.weight`) is at the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from esact_cc import tensor_types
from esact_cc.interpreter.onnxruntime_kernel import OnnxruntimeOnly, run_on_onnxruntime
from esact_cc.runtime.errors import CompileError

Array = np.ndarray
Attrs = dict[str, Any]
Kernel = Callable[[list[Array | None], Attrs, int], list[Array]]

ONNX_KERNELS: dict[str, Kernel] = {}


def kernel(*op_types: str) -> Callable[[Kernel], Kernel]:
    def wrap(fn: Kernel) -> Kernel:
        for op_type in op_types:
            ONNX_KERNELS[op_type] = fn
        return fn

    return wrap


def _as_ints(value: Array | Sequence[int] | None) -> list[int] | None:
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _like(x: Array, value: Any) -> Array:
    return np.asarray(value).astype(x.dtype, copy=False)


# --- elementwise ---------------------------------------------------------------------------
def _binary(fn: Callable[[Array, Array], Array]) -> Kernel:
    return lambda ins, attrs, n: [np.asarray(fn(ins[0], ins[1]))]


def _unary(fn: Callable[[Array], Array]) -> Kernel:
    return lambda ins, attrs, n: [np.asarray(fn(ins[0])).astype(ins[0].dtype, copy=False)]


def _int_div(a: Array, b: Array) -> Array:
    # ONNX integer division truncates toward zero (C semantics), numpy floors.
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return q + fix.astype(q.dtype)


def _div(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.integer):
        return _int_div(a, b)
    return np.divide(a, b)


def _pow(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.floating):
        return np.power(a, b.astype(a.dtype))
    return np.power(a, b.astype(a.dtype))


ERF_CHUNK = 1 << 14
"""Elements per step of `_erf`: its float64 temporaries stay in the L2 cache."""
_ERFC_COEFFICIENTS = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
                      -0.18628806, 0.09678418, 0.37409196, 1.00002368)


def _erf(x: Array) -> Array:
    # Numerical Recipes erfc (Chebyshev fit, fractional error < 1.2e-7), evaluated in float64:
    # well below float32 resolution, and numpy has no erf of its own. Chunked, with in-place
    # steps in the same order as the textbook form (same bits): 2-7x faster on a BERT FFN.
    x = np.asarray(x)
    out = np.empty(x.shape, x.dtype)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_x.size, ERF_CHUNK):
        flat_out[start:start + ERF_CHUNK] = _erf_chunk(flat_x[start:start + ERF_CHUNK])
    return out


def _erf_chunk(x: Array) -> Array:
    z = np.abs(x, dtype=np.float64)
    t = z * 0.5
    t += 1.0
    np.divide(1.0, t, out=t)  # t = 1 / (1 + z / 2)
    poly = t * _ERFC_COEFFICIENTS[0]  # Horner, innermost coefficient first
    for coefficient in _ERFC_COEFFICIENTS[1:]:
        poly += coefficient
        poly *= t
    square = z * z
    np.negative(square, out=square)
    square -= 1.26551223
    poly += square  # -z^2 - 1.26551223 + t * (...)
    np.exp(poly, out=poly)
    poly *= t  # erfc(|x|)
    # erf = 1 - erfc(|x|) for x >= 0 (and NaN), erfc(|x|) - 1 below: the same bits as
    # (1 - erfc) times +1 or -1, plus 0.0 (the product's -0.0 when erfc is 1 becomes the +0.0
    # the subtraction gives). Branch-free: a masked subtraction (ufunc `where=`) on
    # random-signed activations cost 20 ns per element, 5x all of this.
    sign = (x < 0).astype(np.float64)
    sign *= -2.0
    sign += 1.0
    result = np.subtract(1.0, poly, out=poly)
    result *= sign
    result += 0.0
    return result


def _sigmoid(x: Array) -> Array:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


for _name, _fn in {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div, "Pow": _pow,
    "Equal": np.equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
    "Less": np.less, "LessOrEqual": np.less_equal, "And": np.logical_and,
    "Or": np.logical_or, "Xor": np.logical_xor,
}.items():
    ONNX_KERNELS[_name] = _binary(_fn)

for _name, _fn in {
    "Neg": np.negative, "Sqrt": np.sqrt, "Tanh": np.tanh, "Erf": _erf, "Relu": lambda x: np.maximum(x, 0),
    "Sigmoid": _sigmoid, "Reciprocal": lambda x: 1 / x, "Abs": np.abs, "Exp": np.exp, "Log": np.log,
    "Floor": np.floor, "Ceil": np.ceil, "Not": np.logical_not, "Sin": np.sin, "Cos": np.cos,
    "Identity": lambda x: x, "Sign": np.sign,
}.items():
    ONNX_KERNELS[_name] = _unary(_fn)


@kernel("IsNaN")
def _isnan(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.isnan(ins[0])]


@kernel("Mod")
def _mod(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    a, b = ins[0], ins[1]
    return [np.fmod(a, b) if attrs.get("fmod", 0) else np.mod(a, b)]


def _variadic(fn: Callable[[Array, Array], Array]) -> Kernel:
    def run(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
        result = ins[0]
        for other in ins[1:]:
            result = fn(result, other)
        return [np.asarray(result)]

    return run


ONNX_KERNELS["Max"] = _variadic(np.maximum)
ONNX_KERNELS["Min"] = _variadic(np.minimum)
ONNX_KERNELS["Sum"] = _variadic(np.add)


@kernel("Clip")
def _clip(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    low = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("min")
    high = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("max")
    if low is not None:
        x = np.maximum(x, _like(x, low))
    if high is not None:
        x = np.minimum(x, _like(x, high))
    return [x]


@kernel("Where")
def _where(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.where(ins[0], ins[1], ins[2])]


@kernel("Cast")
def _cast(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [ins[0].astype(tensor_types.from_onnx(attrs["to"]).numpy)]


@kernel("Gelu")
def _gelu(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    if attrs.get("approximate", "none") == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return [(0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)]
    # 0.5 * x * (1 + erf(x / sqrt(2))), the products in place, ERF_CHUNK elements at a time:
    # the same element operations, their temporaries kept in cache (BERT FFN: 10% faster)
    root2 = np.asarray(math.sqrt(2), x.dtype)
    flat = np.ascontiguousarray(x).reshape(-1)
    y = np.empty(flat.shape, (0.5 * flat[:0]).dtype)
    for start in range(0, flat.size, ERF_CHUNK):
        part, y_part = flat[start:start + ERF_CHUNK], y[start:start + ERF_CHUNK]
        cdf = _erf(part / root2)
        cdf += 1
        np.multiply(0.5, part, out=y_part)
        y_part *= cdf
    return [y.reshape(x.shape).astype(x.dtype, copy=False)]


# --- linear algebra --------------------------------------------------------------------------
@kernel("MatMul")
def _matmul(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    # numpy only uses BLAS for contiguous, aligned operands; transposed views (K^T in
    # attention) would otherwise take its slow generic loop.
    return [np.matmul(_blas_ready(ins[0]), _blas_ready(ins[1]))]


def _blas_ready(x: Array) -> Array:
    return x if x.flags.c_contiguous and x.flags.aligned else np.ascontiguousarray(x)


@kernel("Gemm")
def _gemm(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    a, b = ins[0], ins[1]
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = np.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * _like(y, alpha)
    if len(ins) > 2 and ins[2] is not None:
        c = ins[2]
        y = y + (c * _like(c, beta) if beta != 1.0 else c)
    return [y]


@kernel("Einsum")
def _einsum(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.einsum(attrs["equation"], *ins)]


@kernel("Conv")
def _conv(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, w = ins[0], ins[1]
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or x.ndim != 4:
        # 1-D and 3-D convolutions, SAME padding: onnxruntime computes them, in the
        # interpreter as in the binary's host segments, so both agree bit for bit.
        raise OnnxruntimeOnly
    kh, kw = w.shape[2:]
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    group = attrs.get("group", 1)
    if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        # einsum would broadcast a weight of 1 input channel over any number of channels
        raise CompileError(f"Conv input has {x.shape[1]} channels, but the weight "
                           f"{list(w.shape)} with group={group} expects {w.shape[1] * group}")
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(
        xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    cin, cout = x.shape[1] // group, w.shape[0] // group
    outs = [
        np.einsum("nchwij,mcij->nmhw", windows[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout])
        for g in range(group)
    ]
    y = np.concatenate(outs, axis=1).astype(x.dtype)
    if len(ins) > 2 and ins[2] is not None:
        y = y + ins[2].reshape(1, -1, 1, 1)
    return [y]


# --- normalisation -----------------------------------------------------------------------------
@kernel("Softmax")
def _softmax(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    axis = attrs.get("axis", -1)
    e = x - np.max(x, axis=axis, keepdims=True)
    np.exp(e, out=e)
    e /= np.sum(e, axis=axis, keepdims=True)
    return [e.astype(x.dtype, copy=False)]


@kernel("LayerNormalization")
def _layer_norm(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = attrs.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    eps = np.asarray(attrs.get("epsilon", 1e-5), x.dtype)
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    inv_std = 1 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + eps)
    y = centered * inv_std * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype), mean, inv_std][:n]


# --- reductions --------------------------------------------------------------------------------
def _reduction(fn: Callable[..., Array]) -> Kernel:
    def run(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
        x = ins[0]
        axes = _as_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
        keepdims = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        return [np.asarray(fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=keepdims)).astype(x.dtype)]

    return run


ONNX_KERNELS["ReduceMean"] = _reduction(np.mean)
ONNX_KERNELS["ReduceSum"] = _reduction(np.sum)
ONNX_KERNELS["ReduceMax"] = _reduction(np.max)
ONNX_KERNELS["ReduceMin"] = _reduction(np.min)
ONNX_KERNELS["ReduceProd"] = _reduction(np.prod)
ONNX_KERNELS["ReduceL1"] = _reduction(lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims))
ONNX_KERNELS["ReduceL2"] = _reduction(
    lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)))
ONNX_KERNELS["ReduceSumSquare"] = _reduction(lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims))


@kernel("ArgMax")
def _argmax(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    axis = attrs.get("axis", 0)
    x = ins[0]
    if attrs.get("select_last_index", 0):
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        idx = np.argmax(x, axis=axis)
    if attrs.get("keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return [idx.astype(np.int64)]


@kernel("CumSum")
def _cumsum(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, axis = ins[0], int(ins[1])
    if attrs.get("reverse", 0):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if attrs.get("exclusive", 0):
        y = y - x
    return [np.flip(y, axis) if attrs.get("reverse", 0) else y]


# --- shapes and data movement ----------------------------------------------------------------
@kernel("Shape")
def _shape(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    shape = ins[0].shape
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return [np.array(shape[start:end], dtype=np.int64)]


@kernel("Size")
def _size(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.array(ins[0].size, dtype=np.int64)]


@kernel("Reshape")
def _reshape(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, shape = ins[0], _as_ints(ins[1]) or []
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@kernel("Flatten")
def _flatten(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    axis = attrs.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return [x.reshape(outer, -1) if x.size else x.reshape(outer, 0)]


@kernel("Transpose")
def _transpose(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.transpose(ins[0], attrs.get("perm"))]


def _axes(ins: list[Array | None], attrs: Attrs) -> list[int] | None:
    return _as_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else attrs.get("axes")


@kernel("Squeeze")
def _squeeze(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    axes = _axes(ins, attrs)
    x = ins[0]
    return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]


@kernel("Unsqueeze")
def _unsqueeze(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    axes = _axes(ins, attrs) or []
    x = ins[0]
    rank = x.ndim + len(axes)
    return [np.expand_dims(x, tuple(sorted(a % rank for a in axes)))]


@kernel("Concat")
def _concat(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.concatenate([i for i in ins if i is not None], axis=attrs["axis"])]


@kernel("Split")
def _split(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, axis = ins[0], attrs.get("axis", 0)
    sizes = _as_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else attrs.get("split")
    if sizes is None:
        parts = attrs.get("num_outputs", n)
        chunk = -(-x.shape[axis] // parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    bounds = np.cumsum(sizes)[:-1]
    return list(np.split(x, bounds, axis=axis))


@kernel("Slice")
def _slice(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    if len(ins) > 1:
        starts, ends = _as_ints(ins[1]) or [], _as_ints(ins[2]) or []
        axes = _as_ints(ins[3]) if len(ins) > 3 and ins[3] is not None else None
        steps = _as_ints(ins[4]) if len(ins) > 4 and ins[4] is not None else None
    else:  # opset < 10: attributes
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis % x.ndim] = slice(start, end, step)
    return [x[tuple(index)]]


@kernel("Gather")
def _gather(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.take(ins[0], ins[1].astype(np.int64), axis=attrs.get("axis", 0))]


@kernel("GatherElements")
def _gather_elements(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, idx = ins[0], ins[1].astype(np.int64)
    axis = attrs.get("axis", 0)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take_along_axis(x, idx, axis=axis)]


@kernel("GatherND")
def _gather_nd(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    data, indices = ins[0], ins[1].astype(np.int64)
    b = attrs.get("batch_dims", 0)
    batch_shape = data.shape[:b]
    k = indices.shape[-1]
    flat_data = data.reshape((-1,) + data.shape[b:])
    flat_idx = indices.reshape((flat_data.shape[0], -1, k))
    dims = np.array(data.shape[b:b + k], np.int64)
    flat_idx = np.where(flat_idx < 0, flat_idx + dims, flat_idx)
    picked = np.stack([flat_data[i][tuple(flat_idx[i].T)] for i in range(flat_data.shape[0])])
    return [picked.reshape(batch_shape + indices.shape[b:-1] + data.shape[b + k:])]


@kernel("ScatterND")
def _scatter_nd(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    data, indices, updates = ins[0].copy(), ins[1].astype(np.int64), ins[2]
    k = indices.shape[-1]
    flat_idx = indices.reshape(-1, k)
    flat_upd = updates.reshape((flat_idx.shape[0],) + data.shape[k:])
    reduction = attrs.get("reduction", "none")
    for i, target in enumerate(map(tuple, flat_idx)):
        if reduction == "add":
            data[target] += flat_upd[i]
        elif reduction == "mul":
            data[target] *= flat_upd[i]
        else:
            data[target] = flat_upd[i]
    return [data]


@kernel("Expand")
def _expand(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x, shape = ins[0], _as_ints(ins[1]) or []
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy()]


@kernel("Tile")
def _tile(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [np.tile(ins[0], _as_ints(ins[1]))]


@kernel("Pad")
def _pad(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    pads = _as_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else attrs["pads"]
    value = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("value", 0)
    axes = _as_ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(x.ndim))
    width = [(0, 0)] * x.ndim
    half = len(pads) // 2
    for i, axis in enumerate(axes):
        width[axis % x.ndim] = (pads[i], pads[i + half])
    mode = attrs.get("mode", "constant")
    if mode != "constant":
        return [np.pad(x, width, mode={"reflect": "reflect", "edge": "edge"}[mode])]
    return [np.pad(x, width, constant_values=np.asarray(value).reshape(-1)[0] if np.size(value) else 0)]


@kernel("Trilu")
def _trilu(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    k = int(ins[1]) if len(ins) > 1 and ins[1] is not None else 0
    return [np.triu(ins[0], k) if attrs.get("upper", 1) else np.tril(ins[0], k)]


@kernel("Range")
def _range(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    start, limit, delta = ins[0], ins[1], ins[2]
    return [np.arange(start, limit, delta, dtype=start.dtype)]


@kernel("Constant")
def _constant(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    return [constant_value(attrs)]


def constant_value(attrs: Attrs) -> Array:
    """The tensor an ONNX Constant node's attributes define."""
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    raise CompileError(f"Constant with attributes {sorted(attrs)} is not supported")


@kernel("ConstantOfShape")
def _constant_of_shape(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    return [np.full(_as_ints(ins[0]) or [], value[0], dtype=value.dtype)]


@kernel("Dropout")
def _dropout(ins: list[Array | None], attrs: Attrs, n: int) -> list[Array]:
    x = ins[0]
    return [x, np.ones(x.shape, dtype=np.bool_)][:n]


def run_kernel(op_type: str, inputs: list[Array | None], attrs: Attrs, n_outputs: int,
               opset: int | None = None) -> list[Array]:
    """Evaluate one ONNX op on numpy inputs: its numpy kernel, or onnxruntime for a host-only
    op (or a form its kernel leaves out), at `opset`."""
    kernel_fn = ONNX_KERNELS.get(op_type)
    if kernel_fn is not None:
        try:
            return kernel_fn(inputs, attrs, n_outputs)
        except OnnxruntimeOnly:
            pass
    if opset is None:
        raise CompileError(f"no numpy semantics for ONNX op {op_type}")
    return run_on_onnxruntime(op_type, inputs, attrs, n_outputs, opset)


# --- registration with the reference interpreter ---------------------------------------------
def _register_with_interpreter() -> None:
    from xdsl.dialects.builtin import ModuleOp

    from esact_cc.dialects.onnx import OP_CLASSES
    from esact_cc.frontend.onnx_attributes import onnx_attrs_of
    from esact_cc.frontend.onnx_export import DEFAULT_OPSET, module_opset
    from esact_cc.interpreter.reference_interpreter import Interpreter, register

    def run_onnx_op(interp: Interpreter, op: Any, args: list[Array]) -> list[Array]:
        op_type = op.name.removeprefix("onnx.")
        module = op.get_toplevel_object()
        opset = module_opset(module) if isinstance(module, ModuleOp) else DEFAULT_OPSET
        positions = op.attributes.get("onnx_input_positions")
        inputs: list[Array | None] = list(args)
        if positions is not None:
            inputs = [None] * (max(positions.get_values(), default=-1) + 1)
            for position, value in zip(positions.get_values(), args, strict=True):
                inputs[position] = value
        out_positions = op.attributes.get("onnx_output_positions")
        wanted = list(out_positions.get_values()) if out_positions is not None else list(range(len(op.results)))
        outputs = run_kernel(op_type, inputs, onnx_attrs_of(op), max(wanted, default=-1) + 1,
                             opset)
        return [outputs[i] for i in wanted]

    for op_type in OP_CLASSES:  # the host-only ones run on onnxruntime (run_kernel)
        register(f"onnx.{op_type}")(run_onnx_op)

    @register("onnx.weight")
    def _weight(interp: Interpreter, op: Any, args: list[Array]) -> Array:
        return interp.store[op.weight_name.data]


_register_with_interpreter()
