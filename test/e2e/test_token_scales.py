"""Per-token activation scales (`quantize{activation-scales=token}`, docs/design.md section 5):

- the INT8 datapath of the binary equals the reference interpreter's bit for bit: on the
  bundled digits ViT, dense and with SPLS (row- and key-masked linears quantize per token too),
  where the interpreter computes a quantized module's layer norm and GELU with the SFU's row
  functions (a row scale follows its row's largest value, so one ulp there would move the
  whole row's scale);
- a linear whose input has outlier channels keeps its group scales: one QUANT_ROWS per group
  run, one row-scaled DEQUANT per run;
- on inputs whose rows differ in range (a zero row, a large-norm row) per-token scales are
  closer to FP32 than per-tensor ones;
- the SFU is charged for QUANT_ROWS' second pass in cycles and energy;
- the option is typed (a bad value is one error line), `auto` follows the calibration source
  (token on synthetic ranges, tensor on calibration data; it is the default), and
  token scales survive an IR round trip.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from esact_cc.dialects.transformer import LinearOp
from esact_cc.runtime.energy import EnergyModel
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.isa import SFU_PASSES
from esact_cc.runtime.run_program import run_program
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model

MODEL = load_bundled_model()
IMAGES = MODEL.test_images[:3]
CONFIG = resolve_config(None)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layer = _load("transformer_layer", Path(__file__).parent.parent / "unit" / "backend" / "transformer_layer.py")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    """32 of the calibration images: what is checked (binary = reference, SFU charges) does not
    depend on how good the ranges are, and calibration is most of a compile."""
    path = tmp_path_factory.mktemp("token") / "calibration.npz"
    np.savez(path, **{MODEL.input_name: MODEL.calibration_images[:32]})
    return str(path)


@functools.cache  # the token-scaled dense binary serves two tests
def _digits(calibration: str, stage: str, scales: str, spls: bool = False) -> api.CompiledModel:
    extra = {"sparsity": "spls"} if spls else {}
    return api.compile(MODEL.onnx_path, stage=stage, calibration_data=calibration,
                       activation_scales=scales, **extra)


@pytest.mark.parametrize("spls", [False, True], ids=["dense", "spls"])
def test_token_binary_matches_the_int8_reference(calibration: str, spls: bool) -> None:
    reference = _digits(calibration, "sparsity" if spls else "quantized", "token", spls)
    linears = [op for op in reference.module.walk() if isinstance(op, LinearOp)]
    assert linears and all(op.token_scales is not None and op.input_scale is None for op in linears)
    if spls:
        assert any(op.is_masked for op in linears), "the test must exercise masked linears"
    program = _digits(calibration, "esact", "token", spls).program()
    opcodes = [i.opcode_name for i in program.instructions]
    assert opcodes.count("quant_rows") >= len(linears)
    row_scaled = [i for i in program.instructions if i.opcode_name == "dequant" and i["has_row_scale"]]
    assert len(row_scaled) >= len(linears)
    for image in IMAGES:
        inputs = {MODEL.input_name: image[None]}
        got = run_program(program, inputs, CONFIG).outputs["logits"]
        expected = reference.run(inputs)["logits"]
        np.testing.assert_array_equal(got, expected)


def _outlier_layer():
    module, store = layer.build(D=256, F=512)  # 4 groups of 64 input channels
    gamma = np.array(store["ln1.g"])
    gamma[[5, 40]] *= 30.0  # two outlier channels in the FFN input, as trained BERTs have
    store._arrays["ln1.g"] = gamma
    return module, store


def test_group_scales_and_token_scales_combine(tmp_path: Path) -> None:
    from esact_cc.dialect_registry import make_context
    from esact_cc.interpreter.reference_interpreter import run_module
    from esact_cc.passes.lower_to_esact import LowerToEsactPass
    from esact_cc.passes.quantize import QuantizePass
    from esact_cc.passes.schedule import SchedulePass
    from esact_cc.tuning.calibrate_pass import CalibratePass
    from esact_cc.backend.emit_esb import program_from_module
    from esact_cc.quantized_kernels import input_runs
    from esact_cc.runtime.functional import execute

    module, store = _outlier_layer()
    inputs = layer.inputs(D=256)
    fp32 = run_module(module, inputs, store)["y"]
    ctx = make_context()
    CalibratePass(store=store).apply(ctx, module)
    QuantizePass(store=store, activation_scales="token").apply(ctx, module)
    golden_module = module.clone()
    grouped = [op for op in golden_module.walk() if isinstance(op, LinearOp) and op.group_size]
    assert len(grouped) == 1 and grouped[0].token_scales is not None
    op = grouped[0]
    runs = input_runs(256, op.group_size.value.data, np.asarray(store[op.group_scales.data]))
    assert len(runs) > 1
    LowerToEsactPass(store=store).apply(ctx, module)
    SchedulePass().apply(ctx, module)
    program = program_from_module(module, store)
    widths = sorted(i["cols"] for i in program.instructions if i.opcode_name == "quant_rows")
    for start, end in runs:  # the grouped linear quantizes each run on its own
        assert end - start in widths
    golden = run_module(golden_module, inputs, store)["y"]
    got = execute(program, inputs, CONFIG).outputs["y"]
    # Same integer datapath; only the FP32 SFU layer norm / GELU round differently.
    assert np.abs(got - golden).max() <= 1e-5 * np.abs(golden).max()
    assert cosine(got, fp32) >= 0.999


def _two_linears(path: Path) -> Path:
    rng = np.random.default_rng(3)
    w1 = (rng.standard_normal((64, 96)) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((96, 64)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "two_linears", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_token_scales_follow_rows_of_different_range(tmp_path: Path) -> None:
    model = _two_linears(tmp_path / "two.onnx")
    x = np.random.default_rng(4).standard_normal((1, 16, 64)).astype(np.float32)
    x[0, 3] = 0.0  # a padding-like row
    x[0, 5] *= 40.0  # one large-norm token: a per-tensor scale leaves the others few levels
    fp32 = api.compile(model, stage="transformer").run({"x": x})["y"]
    per_tensor = api.compile(model, stage="quantized", activation_scales="tensor").run({"x": x})["y"]
    token = api.compile(model, stage="quantized", activation_scales="token")
    per_token = token.run({"x": x})["y"]
    small = np.arange(16) != 5
    assert cosine(per_token[0, small], fp32[0, small]) > cosine(per_tensor[0, small], fp32[0, small])
    assert cosine(per_token[0, small], fp32[0, small]) >= 0.999
    assert np.all(per_token[0, 3] == 0)  # a zero row stays exactly zero
    binary = api.compile(model, stage="esact", activation_scales="token").program()
    np.testing.assert_array_equal(run_program(binary, {"x": x}, CONFIG).outputs["y"], per_token)


def test_the_sfu_is_charged_for_the_row_scan(calibration: str) -> None:
    inputs = {MODEL.input_name: IMAGES[0][None]}
    runs = {mode: run_program(_digits(calibration, "esact", mode).program(), inputs, CONFIG)
            for mode in ("tensor", "token")}
    token = runs["token"]
    rows_elements = sum(w.sfu_elements for i, w in zip(token.program.instructions, token.records)
                        if i.opcode_name == "quant_rows")
    assert rows_elements > 0
    pj = EnergyModel.from_config(CONFIG).sfu_element_pj
    sfu_pj = sum(w.sfu_elements * SFU_PASSES.get(i.opcode_name, 1)
                 for i, w in zip(token.program.instructions, token.records)
                 if i.opcode_name in SFU_PASSES or w.sfu_elements) * pj
    assert token.report["energy"]["breakdown_pj"]["sfu"] == pytest.approx(sfu_pj, rel=1e-9)
    for mode, run in runs.items():
        busy = run.report["units"]["sfu"]["busy_cycles"]
        assert busy > 0, mode
    assert runs["token"].report["units"]["sfu"]["busy_cycles"] > runs["tensor"].report["units"]["sfu"]["busy_cycles"]


def test_the_option_is_typed_and_printed(tmp_path: Path) -> None:
    model = _two_linears(tmp_path / "two.onnx")
    with pytest.raises(CompileError, match=r"activation-scales must be one of tensor\|token, got 'row'"):
        api.compile(model, stage="quantized", activation_scales="row")
    def int8_linears(**options) -> list[LinearOp]:
        compiled = api.compile(model, stage="quantized", **options)
        return [op for op in compiled.module.walk() if isinstance(op, LinearOp)]

    x = np.random.default_rng(5).standard_normal((2, 1, 16, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    assert all(op.token_scales is not None for op in int8_linears())  # the default: token
    assert all(op.token_scales is not None for op in int8_linears(
        calibration_data=str(tmp_path / "calib.npz")))  # with calibration data too
    assert all(op.input_scale is not None for op in int8_linears(activation_scales="tensor"))
    compiled = api.compile(model, stage="quantized", activation_scales="token")
    path = tmp_path / "q.mlir"
    compiled.save_ir(path)
    text = path.read_text()
    assert "token_scales" in text and "input_scale" not in text
    reloaded = api.load_ir(path)
    np.testing.assert_array_equal(reloaded.run({"x": x[0]})["y"], compiled.run({"x": x[0]})["y"])
