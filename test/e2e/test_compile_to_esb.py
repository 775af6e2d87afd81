"""ONNX -> .esb -> functional model, end to end, against onnxruntime and the INT8 reference.

Models are built with onnx.helper in the test (test/helpers/encoder_graphs.py) or written in the
transformer dialect (unit/backend/transformer_layer.py, for mask/causal/tiling variants).
"""

from __future__ import annotations

import encoder_graphs
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from in_process_tool import run_in_process
from esact_cc.passes.lower_to_esact import LowerToEsactPass
from esact_cc.passes.quantize import QuantizePass
from esact_cc.tuning.calibrate_pass import CalibratePass
from esact_cc.passes.schedule import SchedulePass
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.esb import read_esb
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config

from esact_cc import api
from esact_cc.dialect_registry import make_context
from esact_cc.backend.emit_esb import esb_bytes, program_from_module
from esact_cc.interpreter.reference_interpreter import run_module


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = encoder_graphs
layer = _load("transformer_layer", Path(__file__).parent.parent / "unit" / "backend" / "transformer_layer.py")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def calibration_file(tmp_path: Path, seq: int = 16, vocab: int = 50, count: int = 4) -> Path:
    samples = [graphs.encoder_inputs(seq, vocab, padding=i % 3, seed=100 + i) for i in range(count)]
    path = tmp_path / "calib.npz"
    np.savez(path, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    return path


@pytest.mark.parametrize("variant", [{}, {"pre_ln": True, "gelu": "tanh"}], ids=["post_ln_erf", "pre_ln_tanh"])
def test_encoder_binary_matches_onnxruntime_and_int8_reference(tmp_path: Path, variant: dict) -> None:
    model = graphs.encoder(**variant)
    path = tmp_path / "enc.onnx"
    onnx.save(model, path)
    inputs = graphs.encoder_inputs()
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    calib = str(calibration_file(tmp_path))

    compiled = api.compile(path, stage="esb", calibration_data=calib)
    result = execute(program_from_module(compiled.module, compiled.store), inputs, load_config())
    got = result.outputs["last_hidden_state"]
    assert cosine(got, expected) >= 0.99

    golden = api.compile(path, stage="quantized", calibration_data=calib).run(inputs)["last_hidden_state"]
    # Same integer datapath; only the FP32 SFU functions (layer norm, GELU) round differently.
    assert np.abs(got - golden).max() <= 1e-4 * np.abs(golden).max()


def test_two_compiles_are_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "enc.onnx"
    onnx.save(graphs.encoder(layers=1), path)
    first = api.compile(path, stage="esb")
    second = api.compile(path, stage="esb")
    assert esb_bytes(first.module, first.store) == esb_bytes(second.module, second.store)


def _compile_layer(module, store, hw: str | None = None, calibration: str | None = None):
    ctx = make_context()
    CalibratePass(calibration_data=calibration, store=store).apply(ctx, module)
    QuantizePass(store=store).apply(ctx, module)
    golden_module = module.clone()
    LowerToEsactPass(hw=hw, store=store).apply(ctx, module)
    SchedulePass().apply(ctx, module)
    module.verify()
    return golden_module, program_from_module(module, store)


def _tiny_config(tmp_path: Path) -> Path:
    """Buffers so small that linears split into several row and column tiles, attention runs
    one head per group and SFU ops run in many row chunks."""
    path = tmp_path / "tiny.toml"
    path.write_text("[sram]\nweight_buffer = 1024\nactivation_buffer = 1024\n"
                    "accumulator_buffer = 4096\nvector_buffer = 8192\n")
    return path


@pytest.mark.parametrize(
    "mask, causal, tiny",
    [("row", False, False), ("full", False, False), ("none", True, False), ("row", True, True)],
    ids=["row_mask", "full_mask", "causal", "causal_tiny_buffers"],
)
def test_layer_binary_matches_int8_reference(tmp_path: Path, mask: str, causal: bool, tiny: bool) -> None:
    module, store = layer.build(mask=mask, causal=causal, gelu="tanh" if causal else "none")
    inputs = layer.inputs(mask=mask)
    reference = run_module(module, inputs, store)["y"]
    hw = str(_tiny_config(tmp_path)) if tiny else None
    golden_module, program = _compile_layer(module, store, hw)
    golden = run_module(golden_module, inputs, store)["y"]
    got = execute(program, inputs, load_config(hw)).outputs["y"]
    assert np.abs(got - golden).max() <= 1e-5 * np.abs(golden).max()
    assert cosine(got, reference) >= 0.999
    if tiny:
        gemms = [i for i in program.instructions if i.opcode_name == "gemm"]
        assert max(i["n"] for i in gemms) <= 16 and min(i["m"] for i in gemms) < 16  # tiled


def test_unquantized_module_is_a_clear_error() -> None:
    module, store = layer.build()
    with pytest.raises(CompileError, match=r"transformer.linear.*run quantize first"):
        LowerToEsactPass(store=store).apply(make_context(), module)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(args[0])
    assert tool is not None
    return subprocess.run([tool, *args[1:]], capture_output=True, text=True, cwd=cwd, check=False)


def test_cli_compiles_and_esact_run_executes(tmp_path: Path) -> None:
    onnx.save(graphs.encoder(layers=1), tmp_path / "enc.onnx")
    inputs = graphs.encoder_inputs()
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
    done = _cli("esact-cc", "enc.onnx", "-o", "enc.esb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_esb(tmp_path / "enc.esb").debug  # the debug map is filled
    run = _cli("esact-run", "enc.esb", "--input", "input_ids=input_ids.npy",
               "--input", "attention_mask=attention_mask.npy", "--output-dir", "out", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    expected = ort.InferenceSession(str(tmp_path / "enc.onnx")).run(None, inputs)[0]
    assert cosine(np.load(tmp_path / "out" / "last_hidden_state.npy"), expected) >= 0.99


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.onnx", "-o", "out.esb"], "missing.onnx"),
        (["enc.onnx", "-o", "out.esb", "--hw", "no-such-config"], "hardware config 'no-such-config' not found"),
        (["enc.onnx", "-o", "out.esb", "--calibration-data", "nope.npz"], "calibration data 'nope.npz' not found"),
    ],
    ids=["missing_model", "unknown_hw", "missing_calibration"],
)
def test_cli_bad_inputs_fail_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    """In process: the error line and the absent output are the subject (the test above and
    test/hostile/ run esact-cc as a whole process)."""
    onnx.save(graphs.encoder(layers=1), tmp_path / "enc.onnx")
    done = run_in_process("esact-cc", *args, cwd=tmp_path)
    assert done.returncode == 1
    stderr = done.stderr.decode()
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("esact-cc: error: ") and message in lines[-1]
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.esb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.esb")]


def test_outlier_channels_get_input_groups_and_binary_matches(tmp_path: Path) -> None:
    from esact_cc.dialects.transformer import LinearOp

    module, store = layer.build(D=256, F=512)  # 4 groups of 64 input channels
    gamma = np.array(store["ln1.g"])
    gamma[[5, 40]] *= 30.0  # two outlier channels in the FFN input, as trained BERTs have
    store._arrays["ln1.g"] = gamma
    inputs = layer.inputs(D=256)
    reference = run_module(module, inputs, store)["y"]
    samples = [layer.inputs(D=256, seed=10 + i) for i in range(4)]
    np.savez(tmp_path / "calib.npz", **{k: np.stack([x[k] for x in samples]) for k in samples[0]})
    golden_module, program = _compile_layer(module, store, calibration=str(tmp_path / "calib.npz"))
    grouped = [op for op in golden_module.walk() if isinstance(op, LinearOp) and op.group_size]
    assert len(grouped) == 1  # only the FFN input has outliers
    golden = run_module(golden_module, inputs, store)["y"]
    got = execute(program, inputs, load_config()).outputs["y"]
    assert np.abs(got - golden).max() <= 1e-5 * np.abs(golden).max()
    assert cosine(got, reference) >= 0.999
