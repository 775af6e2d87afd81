"""Small LLaMA-style decoders built with onnx.helper, in the shape Hugging Face's exporters
write them (checked against real exports of LlamaForCausalLM / PhiModel, transformers 5):

- RMSNorm: Pow(x, 2) -> ReduceMean(-1) -> Add(eps) -> Sqrt -> Reciprocal (dynamo) or Div(1, .)
  (legacy) -> Mul(x, .) -> Mul(gamma, .);
- attention: bias-free Q/K/V projections, Reshape/Transpose head split, rotary embedding
  x * cos + Concat(Neg(Slice(x, R/2:R)), Slice(x, 0:R/2)) * sin on Q and K (partial: the first R
  channels of each head, the rest concatenated back), repeat_kv for grouped-query heads
  (Unsqueeze(2) -> Expand -> Reshape), scaled Q K^T, a causal additive mask, Softmax, P V, merge;
- SwiGLU FFN: down(Sigmoid-SiLU(gate(x)) * up(x)) (GeGLU with the erf GELU: `act="gelu"`);
  `gated=False`: down(act(up(x))) (T5 with `act="relu"`);
- `sdpa="legacy"`: what both exporters write for attn_implementation="sdpa": sqrt(scale) on Q
  and on K^T, probabilities guarded by Where(IsNaN(P), 0, P); `sdpa="dynamo"` also writes K^T
  as Reshape [B*H, L, d] -> Transpose(0, 2, 1) -> Reshape [B, H, d, L].

Loaded by file path from the tests (test directories are not packages).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def rotary_tables(seq: int, rotary_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """HF's cos / sin caches [seq, rotary_dim] (the frequencies repeated for both halves)."""
    inv_freq = 1.0 / base ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    freqs = np.outer(np.arange(seq, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def decoder(
    layers: int = 2,
    seq: int = 8,
    hidden: int = 32,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 64,
    vocab: int = 40,
    rotary_dim: int | None = None,
    rms_inverse: str = "reciprocal",
    act: str = "silu",
    gated: bool = True,
    cos_from_input: bool = False,
    cos_per_head: bool = False,
    sdpa: str = "",
    window: int | None = None,
    first_row_hidden: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """`rms_inverse`: "reciprocal" | "div_one" | "div" (x / sqrt); `rotary_dim` None = the
    head width; `cos_from_input`: the cos table is a graph input [1, 1, L, R] (computed from
    position ids, as exports with a position_ids input have it; `cos_per_head`: [1, H, L, R]);
    `window`: GPT-Neo's local attention, Where(causal band of that width, scores, min) instead
    of the causal additive mask; `first_row_hidden`: the causal mask hides every key from
    query 0 (-inf, as left padding does), so only the sdpa NaN guard gives it a value (0)."""
    rng = np.random.default_rng(seed)
    d = hidden // heads
    rot = d if rotary_dim is None else rotary_dim
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, shape: tuple[int, ...]) -> str:
        return init(name, (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    cos, sin = rotary_tables(seq, rot)
    init("c_two", np.array(2.0, np.float32))
    init("c_one", np.array(1.0, np.float32))
    init("c_eps", np.array(1e-6, np.float32))
    init("c_half", np.array(0.5, np.float32))
    init("c_sqrt2", np.array(np.sqrt(2.0), np.float32))
    init("c_axis_last", np.array([-1], np.int64))
    init("c_axis2", np.array([2], np.int64))
    init("c_scale", np.array(1.0 / np.sqrt(d), np.float32))
    init("c_sqrt_scale", np.array(d ** -0.25, np.float32))
    init("c_zero", np.array(0.0, np.float32))
    init("c_flat", np.array([heads, seq, d], np.int64))
    init("c_flat_t", np.array([1, heads, d, seq], np.int64))
    init("c_merge", np.array([1, seq, hidden], np.int64))
    init("c_expand", np.array([1, kv_heads, heads // kv_heads, seq, d], np.int64))
    init("c_repeat", np.array([1, heads, seq, d], np.int64))
    sin_name = init("rotary.sin", sin[None, None])
    cos_name = "rotary_cos" if cos_from_input else init("rotary.cos", cos[None, None])
    for name, value in (("s0", 0), ("s_half", rot // 2), ("s_rot", rot), ("s_end", 2**63 - 1),
                        ("s_axis", 3), ("s_step", 1)):
        init(name, np.array([value], np.int64))
    causal = np.triu(np.full((seq, seq), np.finfo(np.float32).min, np.float32), 1)
    if first_row_hidden:
        causal[0] = -np.inf
    init("causal_mask", causal[None, None])
    rows, cols = np.indices((seq, seq))
    init("c_min", np.array(np.finfo(np.float32).min, np.float32))
    init("local_band", ((cols <= rows) & (rows - cols < (window or seq)))[None, None])

    def rms_norm(x: str, prefix: str) -> str:
        sq = node("Pow", [x, "c_two"], f"{prefix}/Pow")
        mean = node("ReduceMean", [sq, "c_axis_last"], f"{prefix}/ReduceMean", keepdims=1)
        root = node("Sqrt", [node("Add", [mean, "c_eps"], f"{prefix}/Add")], f"{prefix}/Sqrt")
        if rms_inverse == "div":
            normed = node("Div", [x, root], f"{prefix}/Div")
        else:
            inverse = (node("Reciprocal", [root], f"{prefix}/Reciprocal") if rms_inverse == "reciprocal"
                       else node("Div", ["c_one", root], f"{prefix}/Div"))
            normed = node("Mul", [x, inverse], f"{prefix}/Mul")
        gamma = init(f"{prefix}.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        return node("Mul", [gamma, normed], f"{prefix}/Mul_1")

    def split(x: str, prefix: str, n: int) -> str:
        shape = init(f"{prefix}.split", np.array([1, seq, n, d], np.int64))
        return node("Transpose", [node("Reshape", [x, shape], f"{prefix}/Reshape")],
                    f"{prefix}/Transpose", perm=[0, 2, 1, 3])

    def slice_last(x: str, start: str, end: str, name: str) -> str:
        return node("Slice", [x, start, end, "s_axis", "s_step"], name)

    def rotate(x: str, prefix: str) -> str:
        part = slice_last(x, "s0", "s_rot", f"{prefix}/Slice_rot") if rot < d else x
        low = slice_last(part, "s0", "s_half", f"{prefix}/Slice_low")
        high = slice_last(part, "s_half", "s_rot", f"{prefix}/Slice_high")
        half = node("Concat", [node("Neg", [high], f"{prefix}/Neg"), low], f"{prefix}/Concat", axis=-1)
        out = node("Add", [node("Mul", [part, cos_name], f"{prefix}/Mul_cos"),
                           node("Mul", [half, sin_name], f"{prefix}/Mul_sin")], f"{prefix}/Add")
        if rot == d:
            return out
        rest = slice_last(x, "s_rot", "s_end", f"{prefix}/Slice_pass")
        return node("Concat", [out, rest], f"{prefix}/Concat_pass", axis=-1)

    def repeat_kv(x: str, prefix: str, merge: bool = True) -> str:
        """`merge` False leaves [B, Hkv, n, L, d] (dynamo flattens K^T from there)."""
        if kv_heads == heads:
            return x
        unsq = node("Unsqueeze", [x, "c_axis2"], f"{prefix}/Unsqueeze")
        expanded = node("Expand", [unsq, "c_expand"], f"{prefix}/Expand")
        return node("Reshape", [expanded, "c_repeat"], f"{prefix}/Reshape_repeat") if merge else expanded

    def activation(x: str, prefix: str) -> str:
        if act == "silu":
            return node("Mul", [x, node("Sigmoid", [x], f"{prefix}/Sigmoid")], f"{prefix}/Mul_silu")
        if act == "relu":
            return node("Relu", [x], f"{prefix}/Relu")
        erf = node("Erf", [node("Div", [x, "c_sqrt2"], f"{prefix}/Div")], f"{prefix}/Erf")
        product = node("Mul", [x, node("Add", [erf, "c_one"], f"{prefix}/Add_1")], f"{prefix}/Mul_x")
        return node("Mul", [product, "c_half"], f"{prefix}/Mul_half")

    h = node("Gather", [weight("embed_tokens", (vocab, hidden)), "input_ids"], "/embed/Gather")
    for i in range(layers):
        p = f"/layers.{i}"
        x = rms_norm(h, f"{p}/input_layernorm")
        q = split(node("MatMul", [x, weight(f"{p}.q", (hidden, hidden))], f"{p}/q_proj/MatMul"), f"{p}/q", heads)
        k = split(node("MatMul", [x, weight(f"{p}.k", (hidden, kv_heads * d))], f"{p}/k_proj/MatMul"), f"{p}/k", kv_heads)
        v = split(node("MatMul", [x, weight(f"{p}.v", (hidden, kv_heads * d))], f"{p}/v_proj/MatMul"), f"{p}/v", kv_heads)
        q, k = rotate(q, f"{p}/q_rot"), repeat_kv(rotate(k, f"{p}/k_rot"), f"{p}/k_rep", sdpa != "dynamo")
        v = repeat_kv(v, f"{p}/v_rep")
        if sdpa == "dynamo":
            flat = node("Reshape", [k, "c_flat"], f"{p}/Reshape_flat")
            flat_t = node("Transpose", [flat], f"{p}/Transpose_flat", perm=[0, 2, 1])
            kt = node("Reshape", [flat_t, "c_flat_t"], f"{p}/Reshape_kt")
        else:
            kt = node("Transpose", [k], f"{p}/Transpose_k", perm=[0, 1, 3, 2])
        if sdpa:
            q = node("Mul", [q, "c_sqrt_scale"], f"{p}/Mul_q")
            kt = node("Mul", [kt, "c_sqrt_scale"], f"{p}/Mul_k")
            scores = node("MatMul", [q, kt], f"{p}/MatMul_qk")
        else:
            scores = node("Mul", [node("MatMul", [q, kt], f"{p}/MatMul_qk"), "c_scale"], f"{p}/Mul_scale")
        masked = (node("Where", ["local_band", scores, "c_min"], f"{p}/Where_local") if window
                  else node("Add", [scores, "causal_mask"], f"{p}/Add_mask"))
        probs = node("Softmax", [masked], f"{p}/Softmax", axis=-1)
        if sdpa:
            isnan = node("IsNaN", [probs], f"{p}/IsNaN")
            probs = node("Where", [isnan, "c_zero", probs], f"{p}/Where_nan")
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{p}/MatMul_pv")], f"{p}/Transpose_ctx", perm=[0, 2, 1, 3])
        merged = node("Reshape", [ctx, "c_merge"], f"{p}/Reshape_merge")
        h = node("Add", [h, node("MatMul", [merged, weight(f"{p}.o", (hidden, hidden))], f"{p}/o_proj/MatMul")], f"{p}/Add_attn")
        x = rms_norm(h, f"{p}/post_attention_layernorm")
        up = node("MatMul", [x, weight(f"{p}.up", (hidden, ffn))], f"{p}/up_proj/MatMul")
        if gated:
            gate = node("MatMul", [x, weight(f"{p}.gate", (hidden, ffn))], f"{p}/gate_proj/MatMul")
            product = node("Mul", [activation(gate, f"{p}/act"), up], f"{p}/Mul_gate")
        else:
            product = activation(up, f"{p}/act")
        h = node("Add", [h, node("MatMul", [product, weight(f"{p}.down", (ffn, hidden))], f"{p}/down_proj/MatMul")], f"{p}/Add_ffn")
    out = rms_norm(h, "/norm")
    nodes.append(helper.make_node("Identity", [out], ["last_hidden_state"], name="/output"))

    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])]
    if cos_from_input:
        inputs.append(helper.make_tensor_value_info("rotary_cos", TensorProto.FLOAT,
                                                    [1, heads if cos_per_head else 1, seq, rot]))
    graph = helper.make_graph(
        nodes, "decoder", inputs,
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def decoder_inputs(seq: int = 8, vocab: int = 40, seed: int = 1, cos_heads: int = 0,
                   rotary_dim: int = 8) -> dict[str, np.ndarray]:
    """`cos_heads` > 0: also the `rotary_cos` input ([1, cos_heads, L, R]) at positions 3..."""
    rng = np.random.default_rng(seed)
    inputs = {"input_ids": rng.integers(0, vocab, (1, seq)).astype(np.int64)}
    if cos_heads:
        cos, _ = rotary_tables(seq + 3, rotary_dim)
        inputs["rotary_cos"] = np.broadcast_to(cos[3:], (1, cos_heads, seq, rotary_dim)).copy()
    return inputs
