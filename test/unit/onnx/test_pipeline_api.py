"""Pipeline stage table and Python API: compile to a stage, dump, reload, run, extend."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from xdsl.passes import ModulePass

from esact_cc import api, pipeline
from esact_cc.cli.esact_cc_main import build_parser
from esact_cc.runtime.errors import CompileError

_spec = importlib.util.spec_from_file_location("onnx_graphs", Path(__file__).with_name("onnx_graphs.py"))
graphs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graphs)


def reference(model, inputs):
    return ort.InferenceSession(model.SerializeToString()).run(None, inputs)[0]


@pytest.mark.parametrize("stage", ["onnx", "transformer"])
def test_compile_and_run_each_stage(stage):
    model = graphs.attention_block(seq=8, width=32, heads=4)
    inputs = graphs.attention_inputs(8, width=32)
    compiled = api.compile(model, stage=stage, input_shapes={"x": (1, 8, 32), "mask": (1, 8)})
    assert compiled.stage == stage
    text = compiled.ir()
    assert ("transformer.attention" in text) == (stage == "transformer")
    got = compiled.run(inputs)["y"]
    expected = reference(model, inputs)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_dump_ir_dir_writes_each_stage_and_files_reload(tmp_path):
    model = graphs.attention_block(seq=6)
    inputs = graphs.attention_inputs(6)
    compiled = api.compile(model, "transformer", {"x": (1, 6, 16), "mask": (1, 6)}, dump_ir_dir=tmp_path)
    dumped = sorted(p.name for p in tmp_path.glob("*.mlir"))
    assert dumped == ["1-onnx.mlir", "2-transformer.mlir"]
    expected = compiled.run(inputs)["y"]
    for name in dumped:
        again = api.load_ir(tmp_path / name)
        np.testing.assert_allclose(again.run(inputs)["y"], expected, rtol=1e-5, atol=1e-6)
        assert api.ir_text(again.module) == (tmp_path / name).read_text()


def test_api_run_takes_shapes_from_inputs():
    model = graphs.attention_block()
    inputs = graphs.attention_inputs(5)
    got = api.run(model, inputs, stage="onnx")["y"]
    np.testing.assert_allclose(got, reference(model, inputs), rtol=1e-5, atol=1e-6)


@dataclass(frozen=True)
class CountOpsPass(ModulePass):
    name = "count-ops"
    seen: tuple = ()

    def apply(self, ctx, op) -> None:
        CountOpsPass.calls.append(sum(1 for _ in op.walk()))


CountOpsPass.calls = []


def test_a_stage_is_added_by_appending_to_the_table():
    stage = pipeline.Stage("counted", "test stage", lambda options: [CountOpsPass()])
    pipeline.STAGES.append(stage)
    try:
        assert "counted" in pipeline.stage_names()
        args = build_parser().parse_args(["m.onnx", "--compile-to", "counted"])
        assert args.compile_to == "counted"
        module, _ = pipeline.compile_model(graphs.attention_block(seq=4), "counted")
        assert CountOpsPass.calls and CountOpsPass.calls[-1] == sum(1 for _ in module.walk())
    finally:
        pipeline.STAGES.remove(stage)


def test_unknown_stage_and_missing_pass_are_errors():
    with pytest.raises(CompileError, match="unknown stage 'nowhere'"):
        pipeline.compile_model(graphs.attention_block(seq=4), "nowhere")
    with pytest.raises(CompileError, match="unknown pass 'no-such-pass'"):
        pipeline.make_pass("no-such-pass")


def test_make_pass_rejects_options_the_pass_does_not_have():
    lift = pipeline.make_pass("lift-transformer", debug=True)
    assert lift.name == "lift-transformer" and lift.debug is True
    with pytest.raises(CompileError, match=r"lift-transformer: unknown option 'debgu' "
                                           r"\(did you mean 'debug'\? valid: debug\)"):
        pipeline.make_pass("lift-transformer", debgu=True)
