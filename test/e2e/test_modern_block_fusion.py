"""Modern-block ops fused into the linears around them (passes/lower_modern_blocks.py): SiLU /
ReLU on the gate projection's output tiles, the gate product on the up projection's, rotary on
the Q / K projections', and RMSNorm made per row chunk by each linear that quantizes it per
token. The binaries still equal the INT8 interpreter bit for bit; the fusions are seen in the
SFU queue's order (an op on a linear's tile right after that tile's DEQUANT, the norm right
before the QUANT_ROWS of its chunk) and where a fusion does not apply the op stands alone.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from esact_cc import api
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import INSTRUCTION_SPECS, Queue
from esact_cc.runtime.run_program import run_program

_spec = importlib.util.spec_from_file_location("decoder_graphs", Path(__file__).with_name("decoder_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)  # type: ignore[union-attr]


def compile_decoder(tmp_path: Path, **variant):
    import onnx

    path = tmp_path / "decoder.onnx"
    onnx.save(graphs.decoder(**variant), path)
    calib = tmp_path / "calib.npz"
    samples = [graphs.decoder_inputs(seed=50 + i) for i in range(4)]
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    program = api.compile(path, stage="esb", calibration_data=str(calib)).program()
    golden = api.compile(path, stage="quantized", calibration_data=str(calib))
    return program, golden


def sfu_stream(program) -> list:
    return [i for i in program.instructions if INSTRUCTION_SPECS[i.opcode_name].queue == Queue.SFU]


def on_linear_tiles(program, fused: set[str]) -> Counter:
    """Per opcode in `fused`: how many of its instructions run on a linear's output tile,
    i.e. follow that tile's DEQUANT in the SFU queue (other fused ops between) with its
    columns and at most its rows; and how many do not (key `(opcode, False)`)."""
    sfu = sfu_stream(program)
    found = Counter()
    for i, instr in enumerate(sfu):
        if instr.opcode_name not in fused:
            continue
        j = i - 1
        while j >= 0 and sfu[j].opcode_name in fused:
            j -= 1
        tile = j >= 0 and sfu[j].opcode_name == "dequant" and \
            sfu[j].fields["cols"] == instr.fields["cols"] and \
            sfu[j].fields["rows"] >= instr.fields["rows"]  # ROPE: row chunks of the tile
        found[instr.opcode_name if tile else (instr.opcode_name, False)] += 1
    return found


@pytest.mark.parametrize("variant", [{}, {"act": "relu", "gated": False, "kv_heads": 4}],
                         ids=["swiglu_gqa", "relu_ffn"])
def test_decoder_ops_run_on_the_linears_tiles_bit_for_bit(tmp_path: Path, variant) -> None:
    program, golden = compile_decoder(tmp_path, **variant)
    inputs = graphs.decoder_inputs()
    result = run_program(program, inputs, load_config())
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  golden.run(inputs)["last_hidden_state"])
    activation = variant.get("act", "silu")
    fused = {"rope", activation} | ({"mul"} if variant.get("gated", True) else set())
    opcodes = Counter(i.opcode_name for i in program.instructions)
    assert on_linear_tiles(program, fused) == {name: opcodes[name] for name in fused}
    assert all(opcodes[name] > 0 for name in fused)
    # Every RMSNorm but the model's final one is made by each consumer on the rows it LOADs,
    # right before quantizing them (Q, K, V and gate / up: 5 per layer, 4 without a gate);
    # only the final norm's rows (the output) are normalized on their own and STOREd.
    sfu = sfu_stream(program)
    rows = Counter()
    for instr, after in zip(sfu, sfu[1:] + [None]):
        if instr.opcode_name == "rmsnorm":
            rows[after is not None and after.opcode_name == "quant_rows"] += instr.fields["rows"]
    consumers = 5 if variant.get("gated", True) else 4
    assert rows == {True: 2 * consumers * 8, False: 8}


def test_rotary_whose_tables_come_after_the_projection_stands_alone(tmp_path: Path) -> None:
    """cos computed on the host from an input is written after layer 0's Q / K projections:
    there ROPE cannot run on their tiles and runs where it stands; layer 1's projections come
    after the table, so their ROPE is fused. The binary equals the interpreter either way."""
    import onnx

    path = tmp_path / "decoder.onnx"
    onnx.save(graphs.decoder(cos_from_input=True), path)
    calib = tmp_path / "calib.npz"
    samples = [graphs.decoder_inputs(seed=50 + i, cos_heads=1) for i in range(4)]
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    inputs = graphs.decoder_inputs(cos_heads=1)
    program = api.compile(path, stage="esb", calibration_data=str(calib)).program()
    golden = api.compile(path, stage="quantized", calibration_data=str(calib)).run(inputs)
    got = run_program(program, inputs, load_config()).outputs["last_hidden_state"]
    np.testing.assert_array_equal(got, golden["last_hidden_state"])
    found = on_linear_tiles(program, {"rope"})
    assert found["rope"] > 0 and found[("rope", False)] > 0


def test_rotary_on_a_masked_projection_in_row_chunks_bit_for_bit(tmp_path: Path) -> None:
    """With SPLS a projection's tile is a whole sequence (row-masked, reused rows scattered
    before the epilogue): ROPE on it LOADs its cos / sin rows in chunks that fit beside the
    tile (here a 2 KiB VBUF: chunks of 4 of the 8 rows), and the binary equals the interpreter."""
    import onnx

    path, hw = tmp_path / "decoder.onnx", tmp_path / "small_vbuf.toml"
    onnx.save(graphs.decoder(), path)
    hw.write_text("[sram]\nvector_buffer = 2048\n")
    calib = tmp_path / "calib.npz"
    samples = [graphs.decoder_inputs(seed=50 + i) for i in range(4)]
    np.savez(calib, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    spls = {"sparsity": "spls", "spls_option": ["threshold=0.5"], "calibration_data": str(calib)}
    inputs = graphs.decoder_inputs()
    program = api.compile(path, stage="esb", hw=str(hw), **spls).program()
    reference = api.compile(path, stage="sparsity", **spls).run(inputs)
    result = run_program(program, inputs, load_config(str(hw)))
    np.testing.assert_array_equal(result.outputs["last_hidden_state"],
                                  reference["last_hidden_state"])
    assert result.report["spls"]["reused_row_fraction"] > 0
    assert on_linear_tiles(program, {"rope"})["rope"] > 0
    assert {i.fields["rows"] for i in program.instructions if i.opcode_name == "rope"} == {4}
