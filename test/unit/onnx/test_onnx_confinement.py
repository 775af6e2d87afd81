"""Model bytes in memory, external data from the model's directory only, shapeless graph
inputs/outputs sized for onnx's checker, and declared output types checked against folded
values. (Host segments with external data are refused by the .esb writer's validation:
test/unit/runtime/test_host_model_check.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from esact_cc.frontend import stable_file_read
from esact_cc.frontend.onnx_file_reader import read_model
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.runtime.errors import CompileError
from esact_cc.runtime.host_model_check import external_tensor
from esact_cc.frontend.stable_file_read import read_stable

W = np.arange(8, dtype=np.float32).reshape(2, 4)


def matmul_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [numpy_helper.from_array(W, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def externalize(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(W.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def test_weights_are_copies_that_survive_the_file_being_truncated(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(), path)
    _, arrays = read_model(path)
    path.write_bytes(b"")  # with the old memory-mapped views, reading `arrays` was a SIGBUS
    np.testing.assert_array_equal(arrays["w"], W)


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_a_file_changing_while_read_is_one_error(tmp_path, monkeypatch, change):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(), path)
    read = stable_file_read._read_exactly

    def read_while_changing(handle, length):
        if change == "shrink":
            path.write_bytes(path.read_bytes()[:10])
            return read(handle, length)
        data = read(handle, length)
        with open(path, "ab") as other:
            other.write(b"\0" * 16)
        return data

    monkeypatch.setattr(stable_file_read, "_read_exactly", read_while_changing)
    with pytest.raises(CompileError, match=r"ONNX model '.*m.onnx' changed while being read"):
        read_model(path)


def test_read_stable_checks_the_range_and_the_cap(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(16)))
    assert read_stable(path, "data", 16, offset=4, length=3) == bytes([4, 5, 6])
    with pytest.raises(CompileError, match=r"bytes 10\.\.20 lie outside the file \(16 bytes\)"):
        read_stable(path, "data", 100, offset=10, length=10)
    with pytest.raises(CompileError, match="16 bytes, beyond the limit of 8"):
        read_stable(path, "data", 8)


def test_external_initializer_beside_the_model_is_read_and_inlined(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes())
    onnx.save(externalize(matmul_model(), "w.bin"), tmp_path / "m.onnx")
    proto, arrays = read_model(tmp_path / "m.onnx")
    np.testing.assert_array_equal(arrays["w"], W)
    assert external_tensor(proto) is None
    _, store = import_onnx(tmp_path / "m.onnx")
    np.testing.assert_array_equal(store["w"], W)


def test_external_data_of_the_wrong_size_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(W.tobytes() * 2)
    model = externalize(matmul_model(), "w.bin")
    model.graph.initializer[0].external_data[2].value = str(2 * W.nbytes)
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(
        CompileError,
        match="initializer 'w': its shape needs 32 bytes, external data 'w.bin' gives 64",
    ):
        import_onnx(tmp_path / "m.onnx")


def test_a_model_in_memory_cannot_refer_to_external_data(tmp_path):
    model = externalize(matmul_model(), str(tmp_path / "w.bin"))
    before = model.SerializeToString()
    with pytest.raises(
        CompileError, match="initializer 'w': external data .* for a model given in memory"
    ):
        import_onnx(model)
    assert model.SerializeToString() == before


def test_a_graph_output_folded_to_the_wrong_shape_names_its_node():
    # y = Range(0, Size(x)) folds to 3 values once x is 3 long; the model declares 5.
    nodes = [
        helper.make_node("Size", ["x"], ["n"], name="/size"),
        helper.make_node(
            "Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0)), name="/zero"
        ),
        helper.make_node(
            "Constant", [], ["one"], value=numpy_helper.from_array(np.array(1)), name="/one"
        ),
        helper.make_node("Range", ["zero", "n", "one"], ["y"], name="/range"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(
        CompileError,
        match="graph output 'y' \\(node '/range'\\) is declared 5 INT64 but " "computes 3 INT64",
    ):
        import_onnx(model, {"x": (3,)})
    import_onnx(model, {"x": (5,)})


def test_shapeless_inputs_and_outputs_are_sized_for_the_checker():
    # onnx's checker wants a shape on every graph input and output; --input-shape and shape
    # inference supply them, and a model without either is refused naming the input.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="/relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    module, _ = import_onnx(model, {"x": (2, 3)})
    assert "(tensor<2x3xf32>) -> tensor<2x3xf32>" in str(module)
    with pytest.raises(CompileError, match=r"input 'x' has no shape: give it with --input-shape x="):
        import_onnx(model)
