"""`insert-spls`: insert the SPLS prediction into every Transformer layer and mask its GEMMs.

For each attention layer (a `transformer.attention`, FP32 or INT8, whose Q, K, V
are linears of one input X: LN1(h) for pre-LN, h for post-LN), in program order (layer 0,
1, ...), it emits on X, before the projections (docs/design.md section 6):

    %xc, %xs = spls.hlog_quantize %X bits(n)
    %pam     = spls.predict_attention %xc, %xs, <HLog W_Q>, <HLog W_Q scale>, <HLog W_K>, ...
    %spa     = spls.topk %pam k(ceil(k-ratio * L))
    %reuse, %keys = spls.local_similarity %spa [probs(%pam)] mode(...) window(...) threshold(...)

and gives the layer's ops these masks as operands: Q, output projection, FFN up and FFN down
`rows(%reuse)` (rows of reused tokens are not computed and take their representative's), the
attention `rows(%reuse)` and, with `attention=topk`, `spa(%spa)` too and K and V
`keys(%keys)` (keys no computed row selects are not generated, per head). HLog weights are
added to the weight store as `<W>.hlog<n>` (i32 level values) and `<W>.hlog<n>.scale` (f32
scalar), from the FP32 weight (or the dequantized INT8 weight after `quantize`).

Options (each also settable per layer; defaults shown first):
  hlog-bits=6  k-ratio=0.2  window=8  threshold=0.995  similarity=cosprob|overlap
  attention=dense|topk  pam-scale=one|attention  first-reference=0  dense-prefix=none
  prediction=on|off
  layers="L:name=value,name=value;L2:..."   per-layer overrides, e.g.
      insert-spls{threshold=0.95 layers="0:threshold=2.0;3:threshold=0.9,window=2"}
  (LAYER is the layer lift-transformer stamped: attention ops counted from 0 in program order;
  an unknown layer index is an error).
`pam-scale` sets the logit scale of PAM, which only matters to `cosprob`'s softmax(PAM): `one`
is softmax(Q^ K^T) as docs/design.md section 6 writes it, `attention` uses the attention's
1/sqrt(d_head) (a flatter distribution, so more rows look alike).
`first-reference` r > 0 (an addition to docs/design.md; 0 is the design) keeps rows 0..r-1
computed and out of every similarity window: in BERT-like models content tokens whose
attention resembles [CLS]'s would otherwise take [CLS]'s outputs, which are unlike theirs.
`threshold` > 1 disables reuse; with k-ratio=1 and threshold > 1 the program computes exactly
the dense values, but still runs (and pays for) the prediction.
`prediction=off` leaves the layer as it is: no prediction, no masks, exactly the dense layer
and its cost (esact-tune turns it off in layers where reuse does not pay for the prediction).
The layer's other options would then do nothing, so a layer's overrides that set any of them
beside `prediction=off` (or onto a uniform `prediction=off`) are an error; with the prediction
off in every layer the pass says so on stderr (the program is the dense one).

k is ceil(k-ratio * L) of the static sequence length L. PAM holds the predicted logits plus
the attention mask as a number, so keys the mask pads out rank below every unmasked key: they
are selected only when a row has fewer than k unmasked keys, and a row whose every key is
masked keeps k of them (docs/design.md section 6); -inf and causal-hidden keys never are. The
ratio itself is not rescaled per input: measure sparsity on unpadded inputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace

import numpy as np
from esact_cc.dialects import spls, transformer
from esact_cc.dialects.onnx import WeightOp
from esact_cc.passes.dead_rows import narrowed_query_note
from esact_cc.passes.layer_roles import Stamp, layers_and_roles, read_stamp, stamp
from esact_cc.passes.weight_store_pass import WeightStorePass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.spls_kernels import (
    MAX_HLOG_BITS,
    MIN_HLOG_BITS,
    SIMILARITY_MODES,
    hlog_encode,
    k_from_ratio,
)
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import Float32Type, ModuleOp, TensorType, i32
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from esact_cc import typed_options
from esact_cc.typed_options import option
from esact_cc.weight_store import WeightStore

ATTENTION_MODES = ("dense", "topk")
DENSE_PREFIXES = ("none", "q", "attention")
"""`dense-prefix`: the layer's ops computed for every row, so they need no decision and the
MAC array runs them beside the prediction's projection, where it would otherwise idle: none;
q (the Q linear); attention (Q and the attention; `attention=dense` only). Exact: the masked
ops after them read only computed rows of what they produce (a reused row takes its
representative's output projection row), so the outputs equal those of `none`; only the
prefix's saving on reused rows is forgone."""
PAM_SCALES = ("one", "attention")
PREDICTIONS = ("on", "off")
"""`prediction`: on (the layer is predicted and masked) or off (left dense, exactly)."""
LINEAR_OPS = (transformer.LinearOp,)
ATTENTION_OPS = (transformer.AttentionOp,)
ACTIVATION_OPS = (transformer.GeluOp, transformer.SiluOp, transformer.ReluOp)
"""FFN activations (between the up and the down projection, or on a gated FFN's gate)."""


WINDOW_MAX = (1 << 16) - 1
"""The SIMILARITY instruction's 16-bit window field; a window >= L means every earlier row."""
THRESHOLD_RANGE = (-1.0, 2.0)
"""Similarity scores lie in [-1, 1] (cosine; overlap in [0, 1]): -1 reuses every candidate,
anything above 1 (esact-tune's 2.0) none."""


@dataclass(frozen=True)
class LayerOptions:
    """The SPLS options of one layer (the pass option names with '_' for '-'); each field's
    type and range are declared once here (`typed_options.option`) and checked from every
    source: esact-cc, the Python API, an SPLS config, `insert-spls{...}`.

    The defaults are the pass's defaults: the best uniform setting esact-tune found for the
    bundled digits ViT under a 1-point budget (calibrated on half of its test images, checked
    on the other half; docs/spls_results.md). docs/design.md section 6's reference setting
    (`DESIGN_REFERENCE`: 4 bits, window 4, threshold 0.9) loses ~16 points on that model.
    No uniform setting stays within 1 point on both the ViT and all-MiniLM-L6-v2
    (bench/spls_default_search.py): text wants `similarity=overlap`; run esact-tune per model.
    """

    hlog_bits: int = option(6, low=MIN_HLOG_BITS, high=MAX_HLOG_BITS)
    k_ratio: float = option(0.2, low=0.0, high=1.0, low_open=True)
    window: int = option(8, low=0, high=WINDOW_MAX)
    threshold: float = option(0.995, low=THRESHOLD_RANGE[0], high=THRESHOLD_RANGE[1])
    similarity: str = option("cosprob", choices=SIMILARITY_MODES)
    attention: str = option("dense", choices=ATTENTION_MODES)
    pam_scale: str = option("one", choices=PAM_SCALES)
    first_reference: int = option(0, low=0, high=WINDOW_MAX)
    dense_prefix: str = option("none", choices=DENSE_PREFIXES)
    prediction: str = option("on", choices=PREDICTIONS)

    def __post_init__(self) -> None:
        self.validate("")

    def validate(self, where: str) -> None:
        typed_options.validate(self, f"insert-spls{where}")
        if self.dense_prefix == "attention" and self.attention != "dense":
            raise CompileError(f"insert-spls{where}: dense-prefix=attention needs "
                               "attention=dense (a top-k attention reads the prediction's SPA)")


def parse_layer_overrides(text: str, base: LayerOptions) -> dict[int, LayerOptions]:
    """`"0:threshold=2.0;3:threshold=0.9,window=2"` -> {layer: options}."""
    overrides = typed_options.parse_layer_overrides(LayerOptions, text, "insert-spls")
    resolved = {layer: replace(base, **values) for layer, values in overrides.items()}
    for layer, values in sorted(overrides.items()):
        unused = sorted(typed_options.dashed(name) for name in values if name != "prediction")
        if resolved[layer].prediction == "off" and unused:
            raise CompileError(f"insert-spls: layer {layer}: prediction=off leaves the layer "
                               f"dense, so {', '.join(unused)} would do nothing")
    return resolved


@dataclass
class _Layer:
    """The ops of one attention layer the pass rewrites."""

    attention: Operation
    q: Operation
    k: Operation
    v: Operation
    out: Operation | None
    ffn_up: Operation | None
    ffn_down: Operation | None
    ffn_gate: Operation | None = None
    """A gated FFN's gate projection (act(x W_gate) * (x W_up))."""


def _single_linear_user(value: SSAValue) -> Operation | None:
    users = [use.operation for use in value.uses]
    linears = [u for u in users if isinstance(u, LINEAR_OPS) and u.operands[0] is value]
    return linears[0] if len(linears) == 1 else None


def _gated_ffn(linear: Operation) -> tuple[Operation, Operation, Operation] | None:
    """(up, down, gate) of a gated FFN whose gate or up projection is `linear`:
    down(act(gate(x)) * up(x)), act one of ACTIVATION_OPS."""
    users = [u.operation for u in linear.results[0].uses]
    if len(users) != 1:
        return None
    act = users[0] if isinstance(users[0], ACTIVATION_OPS) else None
    product = [u.operation for u in act.results[0].uses] if act is not None else users
    if len(product) != 1 or not isinstance(product[0], transformer.MulOp):
        return None
    mul = product[0]
    made_by = (act or linear).results[0]
    other = (mul.rhs if mul.lhs is made_by else mul.lhs).owner
    if isinstance(other, ACTIVATION_OPS) and act is None:
        act, other = other, other.x.owner  # `linear` is the up projection
        gate, up = other, linear
    else:
        gate, up = linear, other
    down = _single_linear_user(mul.result)
    if (act is None or not isinstance(up, LINEAR_OPS) or not isinstance(gate, LINEAR_OPS)
            or up.operands[0] is not gate.operands[0] or down is None):
        return None
    return up, down, gate


def _find_ffn(start: SSAValue) -> tuple[Operation, ...] | None:
    """The FFN (up linear -> gelu -> down linear, or a gated FFN: (up, down, gate)) fed from
    `start` through adds / norms."""
    frontier, seen = [start], set()
    for _ in range(4):
        following: list[SSAValue] = []
        for value in frontier:
            for use in value.uses:
                op = use.operation
                if id(op) in seen:
                    continue
                seen.add(id(op))
                if isinstance(op, LINEAR_OPS) and op.operands[0] is value:
                    gelus = [u.operation for u in op.results[0].uses]
                    if len(gelus) == 1 and isinstance(gelus[0], ACTIVATION_OPS):
                        down = _single_linear_user(gelus[0].results[0])
                        if down is not None:
                            return op, down
                    if (gated := _gated_ffn(op)) is not None:
                        return gated
                elif isinstance(op, (transformer.AddOp, transformer.NormOp)):
                    following.append(op.results[0])
        frontier = following
    return None


def find_layers(function: func.FuncOp) -> list[_Layer]:
    layers: list[_Layer] = []
    for op in function.body.walk():
        if not isinstance(op, ATTENTION_OPS) or op.is_masked:
            continue
        if isinstance(op, transformer.AttentionOp) and (note := narrowed_query_note(op)):
            print(f"warning: insert-spls: {_label(op)}: {note}; layer left dense", file=sys.stderr)
            continue
        # Rotary embeddings rotate Q and K after the projections; the prediction reads the
        # projections' weights (it predicts without the rotation).
        q, k, v = (operand.owner.x.owner if isinstance(operand.owner, transformer.RotaryOp)
                   else operand.owner for operand in op.operands[:3])
        if not all(isinstance(p, LINEAR_OPS) for p in (q, k, v)) or len({id(q), id(k), id(v)}) < 3:
            print(f"warning: insert-spls: {_label(op)}: Q, K, V are not three linears; layer "
                  "left dense", file=sys.stderr)
            continue
        x = q.operands[0]  # type: ignore[union-attr]
        if k.operands[0] is not x or v.operands[0] is not x:  # type: ignore[union-attr]
            print(f"warning: insert-spls: {_label(op)}: Q, K, V read different inputs; layer "
                  "left dense", file=sys.stderr)
            continue
        out = _single_linear_user(op.results[0])
        ffn = _find_ffn(out.results[0]) if out is not None else None
        if ffn is None:
            print(f"warning: insert-spls: {_label(op)}: no FFN found after the attention; its "
                  "FFN stays dense", file=sys.stderr)
        layers.append(_Layer(op, q, k, v, out, *(ffn or (None, None))))  # type: ignore[arg-type,misc]
    return layers


def _label(op: Operation) -> str:
    from esact_cc.ir_queries import op_label

    return op_label(op)


class _HLogWeights:
    """HLog forms of weights in the store, made once per (weight, bits)."""

    def __init__(self, store: WeightStore):
        self.store = store
        self.done: dict[tuple[str, int], tuple[str, str]] = {}

    def fp32_weight(self, linear: Operation) -> tuple[str, np.ndarray]:
        owner = linear.operands[1].owner
        if not isinstance(owner, WeightOp):
            raise CompileError(f"insert-spls: {_label(linear)}: weight must be a weight-store "
                               "handle")
        name = owner.weight_name.data
        weight = np.asarray(self.store[name], np.float64)
        if isinstance(linear, transformer.LinearOp) and linear.weight_scale is not None:
            scale_owner = linear.weight_scale.owner
            assert isinstance(scale_owner, WeightOp)
            weight = weight * np.asarray(self.store[scale_owner.weight_name.data], np.float64)
        return name, weight

    def encode(self, linear: Operation, bits: int) -> tuple[str, str]:
        name, weight = self.fp32_weight(linear)
        if (name, bits) not in self.done:
            codes, scale = hlog_encode(weight, bits)
            base = f"{name}.hlog{bits}"
            self.done[(name, bits)] = (
                self.store.add(self.store.unique_name(base), codes.astype(np.int32)),
                self.store.add(self.store.unique_name(base + ".scale"),
                               np.array(scale, np.float32)))
        return self.done[(name, bits)]

    def zero_bias(self, width: int) -> str:
        name = f"spls.zero_bias.{width}"
        if name not in self.store:
            self.store.add(name, np.zeros(width, np.float32))
        return name


def _handle(anchor: Operation, name: str, typ: TensorType) -> SSAValue:
    op = WeightOp(name, typ)
    Rewriter.insert_op(op, InsertPoint.before(anchor))
    return op.result


def _shape(value: SSAValue) -> tuple[int, ...]:
    typ = value.type
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


DEFAULT_OPTIONS = LayerOptions()
DESIGN_REFERENCE = LayerOptions(hlog_bits=4, k_ratio=0.2, window=4, threshold=0.9,
                                similarity="cosprob", attention="dense")
"""docs/design.md section 6's digits reference setting (47% at 0.7 points on its emulation's
ViT)."""


@dataclass(frozen=True)
class InsertSplsPass(LayerOptions, WeightStorePass):
    """Insert SPLS prediction per layer and rewrite the layer's GEMM ops into masked forms.

    Its options are `LayerOptions`' fields (inherited: one source of truth) plus `layers`."""

    name = "insert-spls"

    layers: str = ""
    """Per-layer overrides: "LAYER:name=value,...;LAYER:..." (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_layer_overrides(self.layers, self.base_options())  # bad text fails here

    def base_options(self) -> LayerOptions:
        return LayerOptions(**{f.name: getattr(self, f.name) for f in fields(LayerOptions)})

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = parse_layer_overrides(self.layers, self.base_options())
        weights = _HLogWeights(self.weights())
        functions = [f for f in op.walk() if isinstance(f, func.FuncOp)]
        stamps = {o: s for f in functions for o, s in layers_and_roles(f).items()}
        layers = [layer for f in functions for layer in find_layers(f)]
        indices = [stamps[layer.attention].layer for layer in layers]  # LAYER: of the options
        unknown = sorted(set(overrides) - set(indices))
        if unknown:
            total = sum(s.role == "attention" for s in stamps.values())
            dense = sorted(set(range(total)) - set(indices))
            raise CompileError(f"insert-spls: per-layer options for layer(s) "
                               f"{', '.join(map(str, unknown))}, but the model has "
                               f"{total} attention layer(s)"
                               + (f" (left dense: {', '.join(map(str, dense))})" if dense else ""))
        chosen = [(layer, overrides.get(index, self.base_options()))
                  for index, layer in zip(indices, layers)]
        if layers and all(options.prediction == "off" for _, options in chosen):
            print("note: insert-spls: prediction=off in every layer: the program is the dense "
                  "one", file=sys.stderr)
        for layer, options in chosen:
            if options.prediction == "on":
                _rewrite_layer(layer, options, weights)


def _defined_before(value: SSAValue, op: Operation) -> bool:
    owner = value.owner
    if not isinstance(owner, Operation) or owner.parent_block() is not op.parent_block():
        return True  # a block argument or a value from an enclosing scope
    return _position(owner) < _position(op)


def _rewrite_layer(layer: _Layer, options: LayerOptions, weights: _HLogWeights) -> None:
    att = layer.attention
    first = min((layer.q, layer.k, layer.v), key=_position)
    mask_value = att.mask  # type: ignore[attr-defined]
    if mask_value is not None and not _defined_before(mask_value, first):
        _hoist_independent(mask_value, first)
    if mask_value is not None and not _defined_before(mask_value, first):
        print(f"warning: insert-spls: {_label(att)}: the attention mask is computed after the "
              "Q/K/V projections; layer left dense", file=sys.stderr)
        return
    x = layer.q.operands[0]
    length = _shape(x)[1]
    heads = att.num_heads.value.data  # type: ignore[attr-defined]
    bits = options.hlog_bits
    k = k_from_ratio(options.k_ratio, length)

    hlog_x = spls.HLogQuantizeOp(x, bits)
    Rewriter.insert_op(hlog_x, InsertPoint.before(first))
    kv_heads = att.key_heads  # type: ignore[attr-defined]
    (wq, wq_s), (wk, wk_s) = _encoded_qk_weights(layer, first, weights, bits)
    bq, bk = _qk_bias_handles(layer, first, weights)
    mask = att.mask  # type: ignore[attr-defined]
    causal = att.causal is not None  # type: ignore[attr-defined]
    pam_scale = 1.0 if options.pam_scale == "one" else att.scale.value.data  # type: ignore[attr-defined]
    pam = spls.PredictAttentionOp(hlog_x.codes, hlog_x.code_scale, wq, wq_s, wk, wk_s,
                                  bq, bk, mask, heads, bits, pam_scale, causal, kv_heads)
    topk = spls.TopKOp(pam.result, k)
    similarity = spls.LocalSimilarityOp(
        topk.result, pam.result if options.similarity == "cosprob" else None,
        options.similarity, options.window, options.threshold, k,
        min(options.first_reference, length))
    _label_prediction(att, hlog_x, pam, topk, similarity)
    Rewriter.insert_op([pam, topk, similarity], InsertPoint.before(first))
    _mask_layer(layer, options, similarity.reuse_map, similarity.key_mask, topk.result,
                heads // kv_heads)


def _encoded_qk_weights(layer: _Layer, first: Operation, weights: _HLogWeights, bits: int
                        ) -> list[tuple[SSAValue, SSAValue]]:
    """(HLog codes, code scale) handles of the Q and K weights, inserted before `first`
    (grouped-query K as it is: the prediction reads K head h // group for query head h)."""
    encoded = []
    for linear in (layer.q, layer.k):
        codes_name, scale_name = weights.encode(linear, bits)
        w_shape = weights.store[codes_name].shape
        encoded.append((_handle(first, codes_name, TensorType(i32, w_shape)),
                        _handle(first, scale_name, TensorType(Float32Type(), []))))
    return encoded


def _qk_bias_handles(layer: _Layer, first: Operation, weights: _HLogWeights) -> list[SSAValue]:
    """FP32 bias handles of the Q and K linears (zeros when they have none) before `first`."""
    biases = []
    for linear in (layer.q, layer.k):
        # A fresh handle before the prediction: the layer's own bias handles may be defined
        # between the Q, K and V linears, after the insertion point.
        bias = linear.bias  # type: ignore[attr-defined]
        width = _shape(linear.results[0])[-1]
        name = (bias.owner.weight_name.data if bias is not None and isinstance(bias.owner, WeightOp)
                else weights.zero_bias(width) if bias is None else None)
        if name is None:
            raise CompileError(f"insert-spls: {_label(linear)}: bias must be a weight-store "
                               "handle")
        biases.append(_handle(first, name, TensorType(Float32Type(), [width])))
    return biases


def _label_prediction(att: Operation, hlog_x: spls.HLogQuantizeOp,
                      pam: spls.PredictAttentionOp, topk: spls.TopKOp,
                      similarity: spls.LocalSimilarityOp) -> None:
    """Name the prediction ops after the layer's attention node and hint their results."""
    for prediction in (hlog_x, pam, topk, similarity):
        prediction.location = att.location  # the layer's attention node names its prediction
        if (where := read_stamp(att)) is not None:
            stamp(prediction, Stamp(where.layer, "predict"))
    for value, hint in ((hlog_x.codes, "x_hlog"), (hlog_x.code_scale, "x_hlog_scale"),
                        (pam.result, "pam"), (topk.result, "spa"),
                        (similarity.reuse_map, "reuse"), (similarity.key_mask, "keys")):
        value.name_hint = hint


def _mask_layer(layer: _Layer, options: LayerOptions, reuse: SSAValue, keys: SSAValue,
                spa: SSAValue, group: int) -> None:
    """Replace the layer's linears and attention by their row- / key- / SPA-masked forms."""
    att = layer.attention
    heads = att.num_heads.value.data  # type: ignore[attr-defined]
    # A linear left dense stays exact: what a reused row reads downstream is its
    # representative's value either way, so it only forgoes that linear's saving.
    q = layer.q if options.dense_prefix == "none" else None
    for linear in (q, layer.out, layer.ffn_up, layer.ffn_gate, layer.ffn_down):
        if linear is not None:
            _replace(linear, _row_masked_linear(linear, reuse))
    if options.attention == "topk" and group > 1:
        print(f"warning: insert-spls: {_label(att)}: grouped-query attention: K and V stay "
              "dense (the key masks are per query head)", file=sys.stderr)
    elif options.attention == "topk":
        for linear in (layer.k, layer.v):
            _replace(linear, _key_masked_linear(linear, keys, heads))
    if options.dense_prefix != "attention":
        _replace(att, _masked_attention(att, reuse, spa if options.attention == "topk" else None))


def _hoist_independent(value: SSAValue, first: Operation) -> None:
    """Move the ops computing `value` in front of `first` when none of them reads anything
    computed at or after it (Swin's relative-position bias is a constant written after the
    projections): the prediction needs the mask before the projections. ONNX and weight ops
    are pure, so moving them earlier keeps the program's meaning; a mask that depends on the
    projections stays where it is (the caller then leaves the layer dense, saying why)."""
    start = _position(first)
    pending, chain = [value], set()
    while pending:
        owner = pending.pop().owner
        if (not isinstance(owner, Operation) or owner in chain
                or owner.parent_block() is not first.parent_block() or _position(owner) < start):
            continue
        if owner.regions or not owner.name.startswith("onnx."):
            return  # a lifted op (the projections among them) or a host segment: stays
        chain.add(owner)
        pending.extend(owner.operands)
    for op in sorted(chain, key=_position):
        op.detach()
        Rewriter.insert_op(op, InsertPoint.before(first))


def _position(op: Operation) -> int:
    block = op.parent_block()
    assert block is not None
    return block.get_operation_index(op)


def _replace(old: Operation, new: Operation) -> None:
    new.attributes.update(old.attributes)
    new.location = old.location  # keep the ONNX node name
    Rewriter.replace_op(old, new)


def _row_masked_linear(op: Operation, rows: SSAValue) -> Operation:
    assert isinstance(op, transformer.LinearOp)
    return op.with_operands_of(rows=rows)


def _key_masked_linear(op: Operation, keys: SSAValue, heads: int) -> Operation:
    assert isinstance(op, transformer.LinearOp)
    return op.with_operands_of(keys=keys, heads=heads)


def _masked_attention(op: Operation, rows: SSAValue, spa: SSAValue | None) -> Operation:
    assert isinstance(op, transformer.AttentionOp)
    return op.with_operands_of(rows=rows, spa=spa)
