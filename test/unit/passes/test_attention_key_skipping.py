"""Keys no row of a query tile sees are skipped (passes/attention_key_ranges.py), bit for bit
with the interpreter: a causal mask combined with a padding mask and broadcast before the Where
(LLaMA's legacy export: Where(Expand(And(causal, padding)), 0, min)) lifts to `causal` plus the
mask (passes/lift_attention.py `_mask_implies_causal`); GPT-Neo's constant local band is a
constant -inf mask whose window each tile keeps to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api

_spec = importlib.util.spec_from_file_location(
    "decoder_graphs", Path(__file__).parents[2] / "e2e" / "decoder_graphs.py")
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)  # type: ignore[union-attr]

SEQ = 40


def _padded_causal_decoder() -> onnx.ModelProto:
    """graphs.decoder with its constant causal mask replaced by the export's form."""
    model = graphs.decoder(layers=1, seq=SEQ)
    g = model.graph
    g.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, SEQ]))
    tril = np.tril(np.ones((SEQ, SEQ), bool))[None, None]
    g.initializer.extend([
        numpy_helper.from_array(tril, "c_causal_bool"),
        numpy_helper.from_array(np.array([1, 1, 1, SEQ], np.int64), "c_pad_shape"),
        numpy_helper.from_array(np.array([1, 1, SEQ, SEQ], np.int64), "c_mask_shape"),
        numpy_helper.from_array(np.array(0.0, np.float32), "c_mask_zero"),
    ])
    mask_nodes = [
        helper.make_node("Reshape", ["attention_mask", "c_pad_shape"], ["pad4"], name="/m/Reshape"),
        helper.make_node("Cast", ["pad4"], ["pad_bool"], name="/m/Cast", to=TensorProto.BOOL),
        helper.make_node("And", ["c_causal_bool", "pad_bool"], ["both"], name="/m/And"),
        helper.make_node("Expand", ["both", "c_mask_shape"], ["both4"], name="/m/Expand"),
        helper.make_node("Where", ["both4", "c_mask_zero", "c_min"], ["padded_causal"],
                         name="/m/Where"),
    ]
    for node in g.node:
        node.input[:] = ["padded_causal" if i == "causal_mask" else i for i in node.input]
    nodes = mask_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    kept = [i for i in g.initializer if i.name != "causal_mask"]
    del g.initializer[:]
    g.initializer.extend(kept)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_padded_causal_mask_lifts_to_causal_and_skips_keys_bit_for_bit() -> None:
    model = _padded_causal_decoder()
    lifted = api.compile(model, stage="transformer")
    attention = [op for op in lifted.module.walk() if op.name == "transformer.attention"]
    assert [(op.causal is not None, op.mask is not None) for op in attention] == [(True, True)]
    inputs = graphs.decoder_inputs(seq=SEQ)
    inputs["attention_mask"] = np.ones((1, SEQ), np.int64)
    inputs["attention_mask"][0, :3] = 0  # left padding
    compiled = api.compile(model, stage="esact")
    qk = [i for i in compiled.program().instructions if i.opcode_name == "attn_qk"]
    assert len({i.fields["lk"] for i in qk}) > 1  # tiles stop at their diagonal
    result = compiled.simulate(inputs)
    expected = api.compile(model, stage="quantized").run(inputs)["last_hidden_state"]
    np.testing.assert_array_equal(result.outputs["last_hidden_state"], expected)


def test_a_local_window_skips_the_keys_outside_each_tile_bit_for_bit() -> None:
    """GPT-Neo's local attention (a constant causal band, lifted to a constant -inf mask):
    each query tile computes from the chunk holding its first visible key to its last."""
    seq = 256
    model = graphs.decoder(layers=1, seq=seq, window=40)
    compiled = api.compile(model, stage="esact")
    qk = [i for i in compiled.program().instructions if i.opcode_name == "attn_qk"]
    assert max(i.fields["lk"] for i in qk) < seq  # no tile spans all keys
    inputs = graphs.decoder_inputs(seq=seq)
    expected = api.compile(model, stage="quantized").run(inputs)["last_hidden_state"]
    result = compiled.simulate(inputs)
    np.testing.assert_array_equal(result.outputs["last_hidden_state"], expected)
