"""SPLS binaries of the bundled digits ViT: the sparse lowering against the INT8 SPLS reference.

- the SPLS binary's outputs equal the INT8 SPLS reference interpreter's bit for bit (default
  options, and attention=topk with the overlap rule);
- with k-ratio 1 and threshold > 1 the SPLS binary equals the dense binary exactly;
- the report executes fewer MACs than the dense binary, and its skipped MACs per layer and
  component are exactly what the reference interpreter's reuse maps imply;
- the CLI path (esact-cc --sparsity spls, esact-run --report) writes the report's spls section.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects import spls
from esact_cc.dialects.transformer import AttentionOp, LinearOp
from esact_cc.passes.layer_roles import component_of, read_stamp
from esact_cc.runtime.hw_config import resolve_config
from esact_cc.runtime.run_program import run_program

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.ir_queries import main_function
from esact_cc.interpreter.reference_interpreter import Interpreter

MODEL = load_bundled_model()
IMAGES = MODEL.test_images[:4]
CONFIG = resolve_config(None)
DEFAULT = ()  # insert-spls defaults: cosprob, attention=dense, 4 bits, k 0.2, window 4, 0.9
TOPK_OVERLAP = ("attention=topk", "similarity=overlap", "hlog-bits=6")
NO_SPARSITY = ("k-ratio=1", "threshold=1.5")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> str:
    """32 of the calibration images: what is checked (binary = reference, reports = reuse maps)
    does not depend on how good the ranges are, and calibration is most of a compile."""
    path = tmp_path_factory.mktemp("spls") / "calibration.npz"
    np.savez(path, **{MODEL.input_name: MODEL.calibration_images[:32]})
    return str(path)


@functools.cache  # the dense and default-SPLS compiles serve two tests each
def compiled(calibration: str, stage: str, options: tuple[str, ...] | None) -> api.CompiledModel:
    extra = {} if options is None else {"sparsity": "spls", "spls_option": list(options)}
    return api.compile(MODEL.onnx_path, stage=stage, calibration_data=calibration, **extra)


def binary_outputs(program, images: np.ndarray) -> list[np.ndarray]:
    return [run_program(program, {MODEL.input_name: image[None]}, CONFIG).outputs["logits"]
            for image in images]


class ReuseRecorder(Interpreter):
    """The reference interpreter, keeping each layer's reuse map (in program order)."""

    def __init__(self, store):
        super().__init__(store)
        self.reuse_maps: list[np.ndarray] = []

    def run_op(self, op, args):
        outputs = super().run_op(op, args)
        if isinstance(op, spls.LocalSimilarityOp):
            self.reuse_maps.append(np.asarray(outputs[0]))
        return outputs


def reference(model: api.CompiledModel, image: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    recorder = ReuseRecorder(model.store)
    outputs = recorder.run_function(main_function(model.module), {MODEL.input_name: image[None]})
    return outputs["logits"], recorder.reuse_maps


@pytest.mark.parametrize("options", [DEFAULT, TOPK_OVERLAP], ids=["default", "topk-overlap"])
def test_spls_binary_equals_the_int8_spls_reference(calibration: str, options) -> None:
    ref_model = compiled(calibration, "spls", options)
    program = compiled(calibration, "esact", options).program()
    reused = 0
    for image, got in zip(IMAGES, binary_outputs(program, IMAGES)):
        expected, maps = reference(ref_model, image)
        np.testing.assert_array_equal(got, expected)
        reused += sum(int((m >= 0).sum()) for m in maps)
    assert reused > 0, "the test must exercise row reuse"


def test_no_sparsity_spls_binary_equals_the_dense_binary(calibration: str) -> None:
    dense = binary_outputs(compiled(calibration, "esact", None).program(), IMAGES)
    sparse = binary_outputs(compiled(calibration, "esact", NO_SPARSITY).program(), IMAGES)
    for a, b in zip(dense, sparse):
        np.testing.assert_array_equal(a, b)


def _expected_skipped(ref_model: api.CompiledModel, maps: list[np.ndarray]) -> list[dict[str, int]]:
    """Skipped MACs per layer and component implied by the reuse maps: a reused row skips its
    row of every row-masked linear (in x out MACs) and its attention row (L x D for QK and PV)."""
    layers: list[dict[str, int]] = [dict.fromkeys(("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2"), 0)
                                    for _ in maps]
    index = {id(op.reuse_map): i for i, op in enumerate(
        o for o in ref_model.module.walk() if isinstance(o, spls.LocalSimilarityOp))}
    for op in ref_model.module.walk():
        if isinstance(op, LinearOp) and op.rows is not None:
            layer = index[id(op.rows)]
            k, n = op.weight.type.get_shape()
            layers[layer][component_of(read_stamp(op))] += int((maps[layer] >= 0).sum()) * k * n
        elif isinstance(op, AttentionOp) and op.rows is not None and op.spa is None:
            layer = index[id(op.rows)]
            _, length, width = op.q.type.get_shape()
            for component in ("qk", "pv"):
                layers[layer][component] += int((maps[layer] >= 0).sum()) * length * width
    return layers


def test_report_skips_exactly_what_the_reuse_maps_say(calibration: str) -> None:
    dense_report = run_program(compiled(calibration, "esact", None).program(),
                               {MODEL.input_name: IMAGES[:1]}, CONFIG).report
    ref_model = compiled(calibration, "spls", DEFAULT)
    result = run_program(compiled(calibration, "esact", DEFAULT).program(),
                         {MODEL.input_name: IMAGES[:1]}, CONFIG)
    report = result.report
    _, maps = reference(ref_model, IMAGES[0])

    assert report["total"]["macs_dense"] == dense_report["total"]["macs_dense"]
    assert report["total"]["macs_executed"] < dense_report["total"]["macs_executed"]
    section = report["spls"]
    expected = _expected_skipped(ref_model, maps)
    for layer, want in enumerate(expected):
        assert section["layers"][str(layer)]["skipped_macs"] == want
        rows = section["layers"][str(layer)]
        assert rows["reused_rows"] == int((maps[layer] >= 0).sum())
        assert rows["rows"] == maps[layer].size
    for component in ("q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2"):
        row = report["components"][component]
        assert row["macs_dense"] - row["macs_executed"] == sum(e[component] for e in expected)
    assert section["reused_row_fraction"] == pytest.approx(
        sum(int((m >= 0).sum()) for m in maps) / sum(m.size for m in maps))
    predict = section["predict"]
    assert predict["shift_adds"] > 0 and predict["busy_cycles"] > 0 and predict["energy_on_chip_pj"] > 0
    dense = section["macs_dense"]
    assert section["computation_reduction"] == pytest.approx(
        1 - (section["macs_executed"] + 0.1 * predict["hlog_products"]) / dense)


def test_cli_compiles_and_reports_spls(calibration: str, tmp_path: Path) -> None:
    esb, image, report = tmp_path / "vit.esb", tmp_path / "x.npy", tmp_path / "report.json"
    np.save(image, IMAGES[:1])
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "esact-cc"), str(MODEL.onnx_path), "--sparsity", "spls",
                    "--spls-option", "threshold=0.9", "--calibration-data", calibration,
                    "-o", str(esb)], check=True, capture_output=True)
    run = subprocess.run([str(bin_dir / "esact-run"), str(esb), "--input",
                          f"{MODEL.input_name}={image}", "--output-dir", str(tmp_path / "out"),
                          "--report", str(report)], check=True, capture_output=True, text=True)
    assert "SPLS" in run.stdout and "reused rows" in run.stdout
    section = json.loads(report.read_text())["spls"]
    assert set(section["skipped_macs"]) == {"q", "k", "v", "qk", "pv", "o", "ffn1", "ffn2"}
    assert 0.0 < section["reused_row_fraction"] < 1.0
