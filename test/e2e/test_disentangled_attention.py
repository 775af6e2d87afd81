"""DeBERTa's disentangled attention end to end (docs/design.md section 3.3): the c2p / p2c terms
of both exporters' forms lift into the attention op, the lifted IR interprets like
onnxruntime, and the INT8 binary (position GEMMs on the MAC array, GATHER_ADD on the SFU)
equals the INT8 interpreter bit for bit, dense and with SPLS; a term the lift cannot express
keeps the attention on the host with one line saying why.

The models are built with onnx.helper (deberta_graphs.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from deberta_graphs import deberta_inputs, deberta_model
from esact_cc.dialects.transformer import AttentionOp

from esact_cc import api
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program

FORMS = {
    "legacy": {},
    "dynamo": {"export": "dynamo"},
    "c2p_only": {"terms": ("c2p",)},
    "p2c_only_batch2": {"terms": ("p2c",), "batch": 2},
}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def save(tmp_path: Path, **knobs) -> Path:
    path = tmp_path / "deberta.onnx"
    onnx.save(deberta_model(**knobs), path)
    return path


def calibration(tmp_path: Path, batch: int = 1) -> str:
    samples = [deberta_inputs(batch=batch, seed=20 + i) for i in range(4)]
    path = tmp_path / "calib.npz"
    np.savez(path, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    return str(path)


def run_onnxruntime(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, inputs)[0]


@pytest.mark.parametrize("knobs", FORMS.values(), ids=FORMS.keys())
def test_position_terms_lift_and_interpret_like_onnxruntime(tmp_path: Path, knobs) -> None:
    path = save(tmp_path, **knobs)
    compiled = api.compile(path, stage="transformer")
    attention = [op for op in compiled.module.walk() if isinstance(op, AttentionOp)]
    terms = knobs.get("terms", ("c2p", "p2c"))
    assert len(attention) == 2
    for op in attention:
        assert (op.c2p_table is not None, op.p2c_table is not None) == ("c2p" in terms,
                                                                         "p2c" in terms)
        for name in terms:  # [H, P, d] tables and [Lq, Lk] indices, weights in the store
            index = compiled.store[getattr(op, f"{name}_index").owner.weight_name.data]
            assert index.shape == (8, 8) and index.min() == 0  # only the positions read
            assert getattr(op, f"{name}_table").type.get_shape() == (2, index.max() + 1, 8)
        # p2c reads positions 1..7 of 8 (the clamped buckets): its table keeps those 7
        assert op.p2c_table is None or op.p2c_table.type.get_shape()[1] == 7
    names = Counter(op.name for op in compiled.module.walk())
    assert names["onnx.GatherElements"] == 0 and names["onnx.MatMul"] == 0
    inputs = deberta_inputs(batch=knobs.get("batch", 1))
    expected = run_onnxruntime(path, inputs)
    got = next(iter(compiled.run(inputs).values()))
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("form", ["legacy", "p2c_only_batch2"])
def test_binary_equals_the_int8_interpreter(tmp_path: Path, form: str) -> None:
    knobs = FORMS[form]
    path, batch = save(tmp_path, **knobs), knobs.get("batch", 1)
    calib, inputs = calibration(tmp_path, batch), deberta_inputs(batch=batch)
    golden = api.compile(path, stage="quantized", calibration_data=calib).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=calib).program()
    result = run_program(program, inputs, load_config())
    (name, got), = result.outputs.items()
    np.testing.assert_array_equal(got, golden[name])
    assert cosine(got, run_onnxruntime(path, inputs)) >= 0.99
    opcodes = Counter(instr.opcode_name for instr in program.instructions)
    terms = len(knobs.get("terms", ("c2p", "p2c")))
    # per layer, batch element and head: Q K^T plus one GEMM and one GATHER_ADD per term
    assert opcodes["gather_add"] == 2 * batch * 2 * terms
    assert opcodes["attn_qk"] == 2 * batch * 2 * (1 + terms)
    assert result.report["components"]["qk"]["macs_executed"] > 0


def test_int8_quantizes_the_position_tables_per_tensor(tmp_path: Path) -> None:
    path = save(tmp_path)
    compiled = api.compile(path, stage="quantized", calibration_data=calibration(tmp_path))
    for op in (op for op in compiled.module.walk() if isinstance(op, AttentionOp)):
        for name in ("c2p", "p2c"):
            table = compiled.store[getattr(op, f"{name}_table").owner.weight_name.data]
            scale = getattr(op, f"{name}_scale").value.data
            assert scale == pytest.approx(np.abs(table).max() / 127, rel=1e-6)


SCHEMES = {
    "spls": {"sparsity": "spls", "sparsity_option": ["window=4", "threshold=0.5"]},
    "sanger": {"sparsity": "sanger"},
    "spatten": {"sparsity": "spatten"},
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sparsity_schemes_mask_the_disentangled_attention_bit_exactly(tmp_path: Path,
                                                                      scheme: str) -> None:
    path = save(tmp_path)
    # No padding (the cosine bound): padded query rows are test_fully_masked_rows.py's subject.
    calib, inputs = calibration(tmp_path), deberta_inputs(padding=0)
    reference = api.compile(path, stage="sparsity", calibration_data=calib, **SCHEMES[scheme])
    attention = [op for op in reference.module.walk() if isinstance(op, AttentionOp)]
    assert attention and all(op.is_masked and op.has_positions for op in attention)
    program = api.compile(path, stage="esb", calibration_data=calib, **SCHEMES[scheme]).program()
    result = run_program(program, inputs, load_config())
    (name, got), = result.outputs.items()
    np.testing.assert_array_equal(got, reference.run(inputs)[name])
    assert cosine(got, run_onnxruntime(path, inputs)) >= 0.95  # approximations (SPLS reuses half)
    if scheme == "spls":
        assert result.report["spls"]["reused_row_fraction"] > 0


NEAR_MISSES = {
    "table_from_activations": "is not activations times a constant position table",
    "index_per_head": "the c2p index differs between batch elements or heads",
}


@pytest.mark.parametrize("near_miss", NEAR_MISSES)
def test_a_term_the_op_cannot_express_is_one_precise_near_miss(tmp_path: Path, near_miss: str,
                                                               capsys) -> None:
    path = save(tmp_path, near_miss=near_miss, layers=1)
    compiled = api.compile(path, stage="transformer", debug_lift=True)
    err = capsys.readouterr().err
    assert NEAR_MISSES[near_miss] in err, err
    assert not any(isinstance(op, AttentionOp) for op in compiled.module.walk())
    inputs = deberta_inputs()
    expected = run_onnxruntime(path, inputs)
    assert np.abs(next(iter(compiled.run(inputs).values())) - expected).max() <= 1e-4 * np.abs(
        expected).max()


def test_a_small_mask_buffer_gathers_in_blocks_of_rows_bit_exactly(tmp_path: Path) -> None:
    """64 bytes of MBUF: half of it holds two index rows of 8 keys, so each head's 8 x 8 scores
    take four GATHER_ADDs per term."""
    config = tmp_path / "mbuf64.toml"
    config.write_text('name = "esact-mbuf64"\n\n[sram]\nmask_buffer = 64\n')
    path, calib, inputs = save(tmp_path), calibration(tmp_path), deberta_inputs()
    golden = api.compile(path, stage="quantized", calibration_data=calib).run(inputs)
    program = api.compile(path, stage="esb", calibration_data=calib, hw=str(config)).program()
    result = run_program(program, inputs, load_config(config))
    (name, got), = result.outputs.items()
    np.testing.assert_array_equal(got, golden[name])
    opcodes = Counter(instr.opcode_name for instr in program.instructions)
    assert opcodes["gather_add"] == 2 * 2 * 2 * 4  # layers x heads x terms x row blocks


def test_a_first_token_output_keeps_every_query_row_of_the_attention(tmp_path: Path) -> None:
    """esact-dead-rows narrows the last layer after the attention only: the position index is
    per query row, so the attention computes them all."""
    path = save(tmp_path, first_token=True, masked=False)  # a padding mask keeps every row
    inputs = {"x": deberta_inputs()["x"]}
    calib = str(tmp_path / "calib_x.npz")
    np.savez(calib, x=np.stack([deberta_inputs(seed=20 + i)["x"] for i in range(4)]))
    golden = api.compile(path, stage="quantized", calibration_data=calib)
    attention = [op for op in golden.module.walk() if isinstance(op, AttentionOp)]
    assert [op.q.type.get_shape()[1] for op in attention] == [8, 8]
    names = Counter(op.name for op in golden.module.walk())
    assert names["transformer.select_rows"] >= 1  # the output projection and norm narrowed
    program = api.compile(path, stage="esb", calibration_data=calib).program()
    result = run_program(program, inputs, load_config())
    (name, got), = result.outputs.items()
    np.testing.assert_array_equal(got, golden.run(inputs)[name])
    assert cosine(got, run_onnxruntime(path, inputs)) >= 0.99


def test_attention_needing_key_blocks_refuses_position_terms_in_one_line(tmp_path: Path) -> None:
    """2 KB of ABUF: not one query row over 128 keys fits, and the key-blocked form does not
    add position scores: a CompileError naming the attention, not a wrong binary."""
    config = tmp_path / "abuf.toml"
    config.write_text("[sram]\nactivation_buffer = 2048\n")
    path = tmp_path / "long.onnx"
    onnx.save(deberta_model(length=128, layers=1, masked=False), path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.stack([deberta_inputs(length=128, seed=i)["x"] for i in range(2)]))
    with pytest.raises(CompileError, match=r"disentangled attention over 128x128 needs key "
                                           r"blocks \(not one query row over all keys fits\)"):
        api.compile(path, stage="esb", calibration_data=str(calib), hw=str(config))
