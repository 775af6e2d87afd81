"""host_model_check.external_tensor finds a tensor with external data wherever a model holds
tensors (test/hostile/test_hostile_runtime.py runs the tools on such binaries)."""

from __future__ import annotations

import pytest
from esact_cc.runtime.host_model_check import external_tensor
from onnx import ModelProto, TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]


def external(name: str, by_location_only: bool = False) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1])
    if by_location_only:
        tensor.data_location = TensorProto.EXTERNAL
    else:
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"
    return tensor


def model(nodes: list, initializers: list = (), **kwargs: object) -> ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              list(initializers), **kwargs)
    return helper.make_model(graph, opset_imports=OPSET)


def sparse_initializer() -> ModelProto:
    sparse = helper.make_sparse_tensor(external("values"), helper.make_tensor(
        "indices", TensorProto.INT64, [1], [0]), [1])
    return model([helper.make_node("Add", ["x", "values"], ["y"])],
                 sparse_initializer=[sparse])


def nested_subgraph() -> ModelProto:
    """A Constant inside an If inside a Loop body inside a function."""
    inner = helper.make_graph([helper.make_node("Constant", [], ["w"], value=external("w"))],
                              "inner", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT,
                                                                          [1])])
    body = helper.make_graph([helper.make_node("If", ["c"], ["w"], then_branch=inner,
                                               else_branch=inner)], "body", [], [])
    function = helper.make_function("local", "f", ["a"], ["b"], [
        helper.make_node("Loop", ["", "c"], [], body=body)], OPSET)
    result = model([helper.make_node("f", ["x"], ["y"], domain="local")])
    result.functions.append(function)
    return result


def training_graph() -> ModelProto:
    result = model([helper.make_node("Identity", ["x"], ["y"])])
    result.training_info.add().initialization.initializer.append(external("state"))
    return result


def self_contained() -> ModelProto:
    constant = helper.make_tensor("c", TensorProto.FLOAT, [1], [2.0])
    return model([helper.make_node("Constant", [], ["c"], value=constant),
                  helper.make_node("Add", ["x", "c"], ["t"]),
                  helper.make_node("Mul", ["t", "w"], ["y"])],
                 [helper.make_tensor("w", TensorProto.FLOAT, [1], [3.0])])


@pytest.mark.parametrize("make, name", [
    (lambda: model([helper.make_node("Add", ["x", "w"], ["y"])], [external("w", True)]), "w"),
    (sparse_initializer, "values"),
    (self_contained, None),
    (nested_subgraph, "w"),
    (training_graph, "state"),
])
def test_external_tensors_are_found_everywhere(make, name: str | None) -> None:
    assert external_tensor(make()) == name
