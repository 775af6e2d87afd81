"""The lift summary (what the accelerator took, each host region with its reason, the layers a
sparsity scheme took), `--strict-lift`, and a sparsity scheme that can take no layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import onnx
import pytest

from esact_cc import api
from esact_cc.lift_summary import sparsity_line, summarize_lift
from esact_cc.pipeline import CompileOptions, compile_model
from esact_cc.runtime.errors import CompileError


def _load(name: str, path: Path):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graphs = _load("conv_block_graphs", Path(__file__).with_name("conv_block_graphs.py"))


STEM = 'host region 0 at "/stem/Conv" (2 ops): no accelerator op for Conv, Transpose'
DECODER = ('at "/decoder/Transpose" (3 ops): no accelerator op for Transpose, Resize, '
           "ConvTranspose")


def test_summary_counts_and_one_line_per_host_region() -> None:
    summary = summarize_lift(api.compile(graphs.conv_block_model(), stage="transformer").module)
    lines = summary.lines()
    # The FFN's ReLU is a host region until the lift takes activations other than GELU.
    regions = len(summary.host_regions)
    assert lines[0] == ("lifted to the accelerator: attention 1/1, linear 6/6, norm 2/2; "
                        f"{regions} host region(s)")
    assert lines[1] == STEM
    assert lines[-1] == f"host region {regions - 1} {DECODER}"
    assert len(lines) == 1 + regions
    as_json = summary.to_json()
    assert as_json["lifted"] == as_json["total"] == {"attention": 1, "linear": 6, "norm": 2}
    assert [r["where"] for r in as_json["host_regions"]][::regions - 1] == [
        "/stem/Conv", "/decoder/Transpose"]


def test_unlifted_attention_is_counted_and_named_in_its_region() -> None:
    model = graphs.conv_block_model(softmax_axis=2)
    summary = summarize_lift(api.compile(model, stage="transformer").module)
    assert summary.lines()[0].startswith("lifted to the accelerator: attention 0/1, linear 6/6")
    assert summary.on_host["attention"] == ["/block/Softmax"]
    reasons = [r.reason for r in summary.host_regions if "not lifted" in r.reason]
    assert reasons == ['1 attention not lifted (first at "/block/Softmax") (esact-cc '
                       "--debug-lift says why)"]


def test_a_softmax_lifted_without_its_attention_counts_as_unlifted_attention() -> None:
    compiled = api.compile(graphs.conv_block_model(scale_from_input=True), stage="transformer")
    assert "transformer.softmax" in compiled.ir()
    summary = summarize_lift(compiled.module)
    assert (summary.lifted["attention"], summary.on_host["attention"]) == (0, ["/block/Softmax"])
    assert any(r.reason.startswith('1 attention not lifted (first at "/block/Softmax")')
               for r in summary.host_regions)


def test_strict_lift_refuses_attention_left_on_the_host() -> None:
    model = graphs.conv_block_model(softmax_axis=2)
    with pytest.raises(CompileError) as info:
        compile_model(model, "transformer", CompileOptions(strict_lift=True))
    assert str(info.value) == ('--strict-lift: left on the host: 1 attention (first at '
                               '"/block/Softmax"); esact-cc --debug-lift says which check failed')
    module, _ = compile_model(graphs.conv_block_model(), "transformer",
                              CompileOptions(strict_lift=True))
    assert summarize_lift(module).lifted["attention"] == 1


def test_a_scheme_that_takes_no_layer_is_an_error_naming_why() -> None:
    model = graphs.conv_block_model(softmax_axis=2)
    with pytest.raises(CompileError, match=r"^--sparsity spls can take no layer: the model has "
                                           r"no attention lifted to the accelerator \(1 attention "
                                           r'\(first at "/block/Softmax"\) stays on the host'):
        api.compile(model, stage="sparsity", sparsity="spls")
    api.compile(model, stage="sparsity", sparsity="dense")  # dense takes no layer by design


def test_sparsity_line_names_the_layers_taken() -> None:
    compiled = api.compile(graphs.conv_block_model(), stage="sparsity", sparsity="spls")
    assert sparsity_line("spls", compiled.module) == "sparsity spls: layer(s) 0 of 1 attention " \
        "layer(s)"
    dense = api.compile(graphs.conv_block_model(), stage="sparsity")
    assert sparsity_line("dense", dense.module) == "sparsity dense: no layer masked"


def test_esact_cc_writes_the_summary_to_stderr_and_strict_lift_errors(tmp_path: Path) -> None:
    from hostile_run import assert_user_error, run_tool

    model = tmp_path / "block.onnx"
    onnx.save(graphs.conv_block_model(), model)
    done = run_tool("esact-cc", model, "--compile-to", "sparsity", "--sparsity", "spls",
                    "-o", tmp_path / "block.mlir", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = [line.removeprefix("esact-cc: ") for line in done.stderr.splitlines()
               if line.startswith("esact-cc: ") and "warning" not in line]
    compiled = api.compile(graphs.conv_block_model(), stage="sparsity", sparsity="spls")
    expected = summarize_lift(compiled.module).lines()
    assert summary == [*expected, "sparsity spls: layer(s) 0 of 1 attention layer(s)"]
    assert summary[1] == STEM and summary[-2].endswith(DECODER)
    assert "lifted" not in done.stdout
    unlifted = tmp_path / "unlifted.onnx"
    onnx.save(graphs.conv_block_model(softmax_axis=2), unlifted)
    assert_user_error(run_tool("esact-cc", unlifted, "--strict-lift", "-o",
                               tmp_path / "u.esb", cwd=tmp_path),
                      '--strict-lift: left on the host: 1 attention (first at "/block/Softmax")')
    assert not (tmp_path / "u.esb").exists()
