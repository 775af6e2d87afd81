"""A host model's large initializers become graph inputs read in place (issue 16): the session
gives the same bits, the tables are views of the model bytes, and models with anything that
could compute differently, or bytes the rewrite does not understand, are left as they are."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from esact_cc.runtime.host_model_tables import LARGE_TABLE_BYTES, lift_large_initializers

ROWS, WIDTH = 1024, 300  # 1.2 MB of float32: above LARGE_TABLE_BYTES, the 1.2 KB bias below


def table_model(after_gather: str = "Add", table_rows: int = ROWS, output: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((table_rows, WIDTH)).astype(np.float32)
    bias = rng.standard_normal((WIDTH,)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"])]
    if after_gather == "Add":
        nodes.append(helper.make_node("Add", ["rows", "bias"], ["y"]))
    else:  # LayerNormalization: a pattern onnxruntime may fuse with the Gather
        nodes.append(helper.make_node("LayerNormalization", ["rows", "bias", "bias"], ["y"],
                                      axis=-1))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, WIDTH])]
    if output:  # the table itself a graph output
        outputs.append(helper.make_tensor_value_info("table", TensorProto.FLOAT,
                                                     [table_rows, WIDTH]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])], outputs,
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def run(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_large_gather_table_is_fed_in_place_with_the_same_bits() -> None:
    model = table_model()
    rewritten, tables = lift_large_initializers(model)
    assert list(tables) == ["table"] and tables["table"].shape == (ROWS, WIDTH)
    assert tables["table"].nbytes >= LARGE_TABLE_BYTES
    assert len(rewritten) < len(model) - tables["table"].nbytes + 1000  # the data left the model
    view = np.frombuffer(model, np.uint8)
    assert np.shares_memory(tables["table"], view)  # no copy of the table
    ids = {"ids": np.array([[0, 7, ROWS - 1, 7, 3]], dtype=np.int64)}
    got = run(rewritten, ids | tables)
    want = run(model, ids)
    assert [g.tobytes() for g in got] == [w.tobytes() for w in want]
    assert [i.name for i in ort.InferenceSession(
        rewritten, providers=["CPUExecutionProvider"]).get_inputs()] == ["ids", "table"]


@pytest.mark.parametrize("model", [
    pytest.param(table_model(after_gather="LayerNormalization"), id="fusable-op"),
    pytest.param(table_model(output=True), id="table-is-a-graph-output"),
    pytest.param(table_model(table_rows=32), id="small-table"),
])
def test_models_that_could_differ_or_gain_nothing_are_left_alone(model: bytes) -> None:
    rewritten, tables = lift_large_initializers(model)
    assert rewritten is model and tables == {}


@pytest.mark.parametrize("damage", ["truncated", "group-wire-type", "bad-utf8"])
def test_bytes_it_does_not_understand_are_left_alone(damage: str) -> None:
    model = table_model()
    if damage == "truncated":
        bad = model[:len(model) // 2]
    elif damage == "group-wire-type":
        bad = bytes([7 << 3 | 3]) + model  # a group field before the graph
    else:
        bad = model.replace(b"table", b"\xff\xfeble")
    rewritten, tables = lift_large_initializers(bad)
    assert rewritten is bad and tables == {}
