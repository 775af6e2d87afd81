"""Differentiable torch forms of the IR ops that lie between a trainable weight and the output.

Each mirrors its numpy definition in esact_cc/interpreter (fp32 `transformer` ops, the masks of
`interpret_masks.py`, and the ONNX ops a `transformer.host` region may hold after the last
layer, such as the CLS gather or mean pooling): the dense forward of `TorchRunner` equals the
reference interpreter's (test/unit/finetune). Masks and other operands that no weight reaches
arrive as numpy arrays and stay constants. An op without a torch form here is a CompileError
naming it: fine-tuning never silently detaches part of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from xdsl.ir import Operation

from esact_cc.interpreter import interpret_masks as masks
from esact_cc.interpreter.reference_interpreter import operands_by_name
from esact_cc.quantized_kernels import causal_visible
from esact_cc.runtime.errors import CompileError

Value = Any  # torch.Tensor (reached by a trainable weight) or np.ndarray (constant)
OpKernel = Callable[[Operation, list[Value]], list[Value]]

TORCH_KERNELS: dict[str, OpKernel] = {}
ONNX_TORCH_KERNELS: dict[str, Callable[[list[Value], dict[str, Any]], Value]] = {}


def tensor(value: Value) -> torch.Tensor:
    """A float operand as a torch tensor (constants converted, float32)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(np.asarray(value, dtype=np.float32))


def _op(name: str) -> Callable[[OpKernel], OpKernel]:
    def wrap(fn: OpKernel) -> OpKernel:
        TORCH_KERNELS[name] = fn
        return fn

    return wrap


def _optional(op: Operation, args: list[Value], name: str) -> Value | None:
    return args[-1] if getattr(op, name) is not None else None


def representative_rows(y: torch.Tensor, reuse_map: np.ndarray) -> torch.Tensor:
    """`interpret_masks.take_representative_rows` on a tensor: a reused row takes its
    representative's row (the gather through which a reused row's loss trains that row)."""
    reuse = masks.batched(reuse_map, y.shape[0], 2)
    source = np.where(reuse >= 0, reuse, np.arange(reuse.shape[1])[None, :]).astype(np.int64)
    index = torch.from_numpy(source)[:, :, None].expand(-1, -1, y.shape[2])
    return torch.gather(y, 1, index)


def unselected_keys_zeroed(y: torch.Tensor, key_mask: np.ndarray) -> torch.Tensor:
    """`interpret_masks.zero_unselected_keys` on a tensor."""
    keep = masks.zero_unselected_keys(np.ones(tuple(y.shape), np.float32), key_mask)
    return y * tensor(keep)


@_op("transformer.linear")
def _linear(op: Operation, args: list[Value]) -> list[Value]:
    if op.is_quantized:  # type: ignore[attr-defined]
        raise CompileError(f"fine-tuning runs the fp32 IR; {op.name} is INT8")
    v = operands_by_name(op, args)
    y = torch.matmul(tensor(v["x"]), tensor(v["weight"]))
    if "bias" in v:
        y = y + tensor(v["bias"])
    if "rows" in v:
        y = representative_rows(y, np.asarray(v["rows"]))
    if "keys" in v:
        y = unselected_keys_zeroed(y, np.asarray(v["keys"]))
    return [y]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: np.ndarray | None,
              num_heads: int, scale: float, causal: bool, kv_heads: int | None) -> torch.Tensor:
    """`interpret_transformer_ops.run_attention` in torch (additive mask, causal, GQA)."""
    batch, lq, width = q.shape
    lk = k.shape[1]
    kv_heads = kv_heads or num_heads
    d, dv = width // num_heads, v.shape[2] // kv_heads
    if kv_heads != num_heads:
        group = num_heads // kv_heads
        k = k.reshape(batch, lk, kv_heads, d).repeat_interleave(group, 2).reshape(batch, lk, -1)
        v = v.reshape(batch, lk, kv_heads, dv).repeat_interleave(group, 2).reshape(batch, lk, -1)
    qh = q.reshape(batch, lq, num_heads, d).transpose(1, 2)
    kh = k.reshape(batch, lk, num_heads, d).permute(0, 2, 3, 1)
    vh = v.reshape(batch, lk, num_heads, dv).transpose(1, 2)
    scores = torch.matmul(qh, kh) * scale
    if mask is not None:
        scores = scores + tensor(mask)
    if causal:
        visible = torch.from_numpy(np.ascontiguousarray(causal_visible(lq, lk)))
        scores = scores.masked_fill(~visible, float("-inf"))
    hidden = ~torch.isfinite(scores).any(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(hidden, 0.0), dim=-1).masked_fill(hidden, 0.0)
    out = torch.matmul(probs, vh)
    return out.transpose(1, 2).reshape(batch, lq, dv * num_heads)


@_op("transformer.attention")
def _attention(op: Operation, args: list[Value]) -> list[Value]:
    v = operands_by_name(op, args)
    attrs: Any = op
    if "tokens" in v or "head_mask" in v or attrs.int8_scales() is not None or attrs.has_positions:
        raise CompileError(f"fine-tuning: {op.name} with token/head pruning, INT8 scales or "
                           "disentangled position terms (DeBERTa) has no torch form (fp32 SPLS "
                           "only)")
    mask = None if v.get("mask") is None else np.asarray(v["mask"], np.float32)
    if "spa" in v:
        mask = masks.spa_additive_mask(mask, np.asarray(v["spa"]), v["q"].shape[0])
    y = attention(tensor(v["q"]), tensor(v["k"]), tensor(v["v"]), mask, attrs.heads,
                  attrs.scale.value.data, attrs.causal is not None, attrs.key_heads)
    return [y if "rows" not in v else representative_rows(y, np.asarray(v["rows"]))]


@_op("transformer.layer_norm")
def _layer_norm(op: Operation, args: list[Value]) -> list[Value]:
    x = tensor(args[0])
    beta = _optional(op, args, "beta")
    eps = op.epsilon.value.data  # type: ignore[attr-defined]
    return [F.layer_norm(x, (x.shape[-1],), tensor(args[1]),
                         None if beta is None else tensor(beta), eps)]


@_op("transformer.rms_norm")
def _rms_norm(op: Operation, args: list[Value]) -> list[Value]:
    x = tensor(args[0])
    eps = op.epsilon.value.data  # type: ignore[attr-defined]
    return [x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * tensor(args[1])]


@_op("transformer.gelu")
def _gelu(op: Operation, args: list[Value]) -> list[Value]:
    return [F.gelu(tensor(args[0]), approximate=op.approximate.data)]  # type: ignore[attr-defined]


@_op("transformer.softmax")
def _softmax(op: Operation, args: list[Value]) -> list[Value]:
    return [torch.softmax(tensor(args[0]), dim=-1)]


@_op("transformer.add")
def _add(op: Operation, args: list[Value]) -> list[Value]:
    return [tensor(args[0]) + tensor(args[1])]


@_op("transformer.mul")
def _mul(op: Operation, args: list[Value]) -> list[Value]:
    return [tensor(args[0]) * tensor(args[1])]


@_op("transformer.silu")
def _silu(op: Operation, args: list[Value]) -> list[Value]:
    return [F.silu(tensor(args[0]))]


@_op("transformer.relu")
def _relu(op: Operation, args: list[Value]) -> list[Value]:
    return [torch.relu(tensor(args[0]))]


# ----------------------------------------------------------------------------- ONNX, in hosts


def _onnx(*op_types: str):
    def wrap(fn):
        for op_type in op_types:
            ONNX_TORCH_KERNELS[op_type] = fn
        return fn

    return wrap


def _ints(value: Value | None) -> list[int] | None:
    if value is None:
        return None
    array = value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return [int(i) for i in array.reshape(-1)]


def _axes(ins: list[Value], attrs: dict[str, Any]) -> list[int] | None:
    return _ints(ins[1]) if len(ins) > 1 and ins[1] is not None else attrs.get("axes")


@_onnx("Gather")
def _gather(ins: list[Value], attrs: dict[str, Any]) -> Value:
    index = torch.from_numpy(np.asarray(ins[1]).astype(np.int64))
    axis = attrs.get("axis", 0) % ins[0].dim()
    flat = torch.index_select(ins[0], axis, index.reshape(-1))
    return flat.reshape(*ins[0].shape[:axis], *index.shape, *ins[0].shape[axis + 1:])


@_onnx("Slice")
def _slice(ins: list[Value], attrs: dict[str, Any]) -> Value:
    x = ins[0]
    starts, ends = _ints(ins[1]) or [], _ints(ins[2]) or []
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise CompileError("fine-tuning: Slice with a negative step has no torch form")
        size = x.shape[axis]
        index[axis % x.dim()] = slice(*slice(start, end, step).indices(size))
    return x[tuple(index)]


@_onnx("Squeeze")
def _squeeze(ins: list[Value], attrs: dict[str, Any]) -> Value:
    axes = _axes(ins, attrs)
    x = ins[0]
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@_onnx("Unsqueeze")
def _unsqueeze(ins: list[Value], attrs: dict[str, Any]) -> Value:
    x = ins[0]
    axes = _axes(ins, attrs) or []
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


@_onnx("Reshape")
def _reshape(ins: list[Value], attrs: dict[str, Any]) -> Value:
    shape = _ints(ins[1]) or []
    x = ins[0]
    shape = [x.shape[i] if s == 0 and not attrs.get("allowzero", 0) else s
             for i, s in enumerate(shape)]
    return x.reshape(shape)


@_onnx("Flatten")
def _flatten(ins: list[Value], attrs: dict[str, Any]) -> Value:
    x = ins[0]
    axis = attrs.get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@_onnx("Transpose")
def _transpose(ins: list[Value], attrs: dict[str, Any]) -> Value:
    perm = attrs.get("perm") or list(range(ins[0].dim()))[::-1]
    return ins[0].permute(*perm)


def _fold(fn: Callable[..., torch.Tensor], ins: list[Value]) -> torch.Tensor:
    out = tensor(ins[0])
    for other in ins[1:]:
        out = fn(out, tensor(other))
    return out


def _reduction(fn: Callable[..., torch.Tensor]) -> Callable[[list[Value], dict[str, Any]], Value]:
    def run(ins: list[Value], attrs: dict[str, Any]) -> Value:
        x = ins[0]
        axes = _axes(ins, attrs)
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, dim=tuple(a % x.dim() for a in axes), keepdim=keep)

    return run


ONNX_TORCH_KERNELS["ReduceMean"] = _reduction(torch.mean)
ONNX_TORCH_KERNELS["ReduceSum"] = _reduction(torch.sum)
ONNX_TORCH_KERNELS["ReduceL2"] = _reduction(
    lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim)))
ONNX_TORCH_KERNELS["ReduceMax"] = _reduction(torch.amax)
ONNX_TORCH_KERNELS["Max"] = lambda ins, attrs: _fold(torch.maximum, ins)
ONNX_TORCH_KERNELS["Min"] = lambda ins, attrs: _fold(torch.minimum, ins)
ONNX_TORCH_KERNELS["Neg"] = lambda ins, attrs: -ins[0]
ONNX_TORCH_KERNELS["Expand"] = lambda ins, attrs: tensor(ins[0]) * torch.ones(
    [int(d) for d in np.asarray(ins[1])])
ONNX_TORCH_KERNELS["Where"] = lambda ins, attrs: torch.where(
    torch.from_numpy(np.asarray(ins[0], bool)), tensor(ins[1]), tensor(ins[2]))
ONNX_TORCH_KERNELS["Identity"] = lambda ins, attrs: ins[0]
ONNX_TORCH_KERNELS["Add"] = lambda ins, attrs: tensor(ins[0]) + tensor(ins[1])
ONNX_TORCH_KERNELS["Sub"] = lambda ins, attrs: tensor(ins[0]) - tensor(ins[1])
ONNX_TORCH_KERNELS["Mul"] = lambda ins, attrs: tensor(ins[0]) * tensor(ins[1])
ONNX_TORCH_KERNELS["Div"] = lambda ins, attrs: tensor(ins[0]) / tensor(ins[1])
ONNX_TORCH_KERNELS["Pow"] = lambda ins, attrs: torch.pow(tensor(ins[0]), tensor(ins[1]))
ONNX_TORCH_KERNELS["Sqrt"] = lambda ins, attrs: torch.sqrt(ins[0])
ONNX_TORCH_KERNELS["Tanh"] = lambda ins, attrs: torch.tanh(ins[0])
ONNX_TORCH_KERNELS["Erf"] = lambda ins, attrs: torch.erf(ins[0])
ONNX_TORCH_KERNELS["Relu"] = lambda ins, attrs: torch.relu(ins[0])


@_onnx("Concat")
def _concat(ins: list[Value], attrs: dict[str, Any]) -> Value:
    return torch.cat([tensor(i) for i in ins], dim=attrs["axis"])


@_onnx("Clip")
def _clip(ins: list[Value], attrs: dict[str, Any]) -> Value:
    low = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("min")
    high = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("max")
    return torch.clamp(ins[0], None if low is None else float(np.asarray(low)),
                       None if high is None else float(np.asarray(high)))


@_onnx("Cast")
def _cast(ins: list[Value], attrs: dict[str, Any]) -> Value:
    from onnx import TensorProto

    if attrs.get("to") != TensorProto.FLOAT:
        raise CompileError("fine-tuning: a Cast of a trained value to a non-float type has no "
                           "gradient")
    return ins[0]
