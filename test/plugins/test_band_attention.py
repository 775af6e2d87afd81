"""The test-defined scheme `band_attention` (band_attention*.py beside this file) brings its own
dialect op, insert pass, interpreter semantics, instruction (ISA row, kernel, cost) and lowering
rule through one registration: every central table finds them, no package file names them, and
the compiled binary runs the new instruction bit-identically to the INT8 reference interpreter."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from xdsl.parser import Parser

import band_attention as scheme_module
from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.dialect_registry import get_all_dialects, make_context
from esact_cc.dialects import esact
from esact_cc.interpreter.reference_interpreter import registered_ops
from esact_cc.passes.registry import get_all_passes
from esact_cc.runtime import isa
from esact_cc.runtime.esb import write_esb
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.run_program import run_program
from esact_cc.sparsity.registry import register_scheme, unregister_scheme

BUNDLED = load_bundled_model()
CONFIG = load_config()
REPOSITORY = Path(__file__).resolve().parents[2]
OPTIONS = {"sparsity": "band_attention", "sparsity_option": ["window=3", "1:window=1"]}


@pytest.fixture(scope="module")
def registered():
    register_scheme(scheme_module.SCHEME)
    yield scheme_module.SCHEME
    unregister_scheme(scheme_module.NAME)
    if "band_mask" in isa.INSTRUCTION_SPECS:  # leave the ISA table and esact ops as found
        isa.unregister_instruction("band_mask")
    esact.INSTRUCTION_OPS.pop("band_mask", None)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, **{BUNDLED.input_name: BUNDLED.calibration_images[:16]})
    return str(path)


def test_every_table_finds_the_scheme_and_no_package_file_names_it(registered):
    assert get_all_dialects()["band_attention"]().name == "band_attention"
    assert get_all_passes()["insert-band-attention"]() is scheme_module.InsertBandPass
    assert "band_attention.band_mask" in registered_ops()
    spec = isa.INSTRUCTION_SPECS["band_mask"]
    assert isa.SPECS_BY_OPCODE[spec.opcode] is spec and spec.queue is isa.Queue.PREDICT
    package = [p for folder in ("esact_cc", "dialects", "passes", "runtime")
               for p in (REPOSITORY / folder).rglob("*.py")]
    assert len(package) > 100
    assert not [p for p in package if "band_attention" in p.read_text() or "band_mask" in p.read_text()]


@pytest.fixture(scope="module")
def reference(registered, calibration):
    """The INT8 sparsity-stage module the scheme produces (the interpreter's reference)."""
    return api.compile(BUNDLED.onnx_path, stage="sparsity", calibration_data=calibration,
                       **OPTIONS)


def test_the_scheme_ir_round_trips_through_text(reference):
    masks = [op for op in reference.module.walk() if isinstance(op, scheme_module.BandMaskOp)]
    assert [op.window.value.data for op in masks] == [3, 1, 3, 3]
    text = str(reference.module)
    assert str(Parser(make_context(), text).parse_module()) == text


@pytest.fixture(scope="module")
def program(registered, calibration):
    return api.compile(BUNDLED.onnx_path, stage="esact", calibration_data=calibration,
                       **OPTIONS).program()


def test_the_binary_runs_band_mask_like_the_interpreter(calibration, reference, program):
    image = BUNDLED.test_images[:1]
    dense = api.compile(BUNDLED.onnx_path, stage="esact", calibration_data=calibration).program()
    result = run_program(program, {BUNDLED.input_name: image}, CONFIG)
    dense_total = run_program(dense, {BUNDLED.input_name: image}, CONFIG).report["total"]

    np.testing.assert_array_equal(result.outputs["logits"],
                                  reference.run({BUNDLED.input_name: image})["logits"])
    band_masks = [i for i in program.instructions if i.opcode_name == "band_mask"]
    batch, heads, layers = 1, 4, 4
    assert len(band_masks) == batch * heads * layers
    assert {i.fields["window"] for i in band_masks} == {1, 3}
    total = result.report["total"]
    assert total["macs_dense"] == dense_total["macs_dense"]
    assert total["macs_executed"] < dense_total["macs_executed"]


def test_esact_run_finds_the_instruction_through_an_installed_entry_point(tmp_path, program):
    """A runtime-only tool decodes BAND_MASK once a package declares its hardware module in
    `esact_cc.instructions`, and not before; its outputs are the in-process run's."""
    image = BUNDLED.test_images[:1]
    write_esb(program, tmp_path / "band.esb")
    np.save(tmp_path / "image.npy", image)
    site = tmp_path / "site"
    (site / "band_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "band_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: band-plugin\nVersion: 1.0\n")
    command = ["esact-run", "band.esb", "--input", f"{BUNDLED.input_name}=image.npy",
               "--output-dir", "out"]
    path = os.pathsep.join([str(site), str(Path(scheme_module.__file__).parent)])
    env = {**os.environ, "PYTHONPATH": path}
    missing = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "unknown opcode 0x62" in missing.stderr
    (site / "band_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[esact_cc.instructions]\nband_attention = band_attention_hardware\n")
    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "logits.npy"),
        run_program(program, {BUNDLED.input_name: image}, CONFIG).outputs["logits"])
