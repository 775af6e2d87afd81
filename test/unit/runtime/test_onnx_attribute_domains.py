"""Attributes that crash onnx / onnxruntime are refused before either sees the graph, by the
compiler (a model) and by the .esb loader (a host segment)."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from esact_cc.runtime.onnx_attribute_domains import attribute_domain_error

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "helpers"))
from hostile_run import assert_user_error, run_tool, tree_state  # noqa: E402


def gather_nd_model(batch_dims: int, in_subgraph: bool = False) -> onnx.ModelProto:
    node = helper.make_node("GatherND", ["x", "i"], ["y"], name="gnd", batch_dims=batch_dims)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    if in_subgraph:
        body = helper.make_graph([node], "body", [], [y])
        node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
        inputs = [x, i, helper.make_tensor_value_info("c", TensorProto.BOOL, [])]
    else:
        inputs = [x, i]
    graph = helper.make_graph([node], "g", inputs, [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("in_subgraph", [False, True])
def test_negative_batch_dims_is_named(in_subgraph: bool) -> None:
    error = attribute_domain_error(gather_nd_model(-5, in_subgraph))
    assert error is not None and "'batch_dims' = -5 is outside 0..64" in error


def test_valid_batch_dims_pass() -> None:
    assert attribute_domain_error(gather_nd_model(0)) is None
    assert attribute_domain_error(gather_nd_model(1)) is None


def test_esact_cc_refuses_the_model_instead_of_crashing(tmp_path: Path) -> None:
    """onnx's strict shape inference dies with SIGSEGV on this model."""
    onnx.save(gather_nd_model(-5), tmp_path / "m.onnx")
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", "m.onnx", "-o", "m.esb", cwd=tmp_path)
    assert_user_error(result, "GatherND", "batch_dims")
    assert tree_state(tmp_path) == before


def test_the_esb_loader_refuses_such_a_host_segment() -> None:
    """onnxruntime dies with SIGSEGV running it (bench/fuzz_inputs.py binary case 80661)."""
    from esact_cc.runtime.errors import ProgramError
    from esact_cc.runtime.esb import HostSegment, TensorDesc
    from esact_cc.runtime.host_model_check import check_host_model

    inputs = (TensorDesc("x", (2, 3, 4), "float32", 0), TensorDesc("i", (2, 1), "int64", 96))
    outputs = (TensorDesc("y", (2, 4), "float32", 128),)
    good = HostSegment(gather_nd_model(0).SerializeToString(), inputs, outputs)
    check_host_model(good, 0)
    bad = HostSegment(gather_nd_model(-2**31).SerializeToString(), inputs, outputs)
    with pytest.raises(ProgramError, match="host segment 3: node 'gnd' .*batch_dims"):
        check_host_model(bad, 3)
