"""raw_data_splice: a model serialized with placeholders and its large initializers spliced
in is byte for byte the model serialized holding them, through export_ops and on its own."""

import numpy as np
import pytest
from esact_cc.dialects.onnx import WeightOp

from esact_cc.frontend import onnx_builders
from esact_cc.frontend.onnx_export import export_ops
from esact_cc.frontend.raw_data_splice import SPLICE_BYTES, placeholder, serialize_spliced
from esact_cc.weight_store import WeightStore

BIG = SPLICE_BYTES // 4 + 5  # float32 elements just over the splice size


def _model(arrays: dict[str, np.ndarray], spliced: list[np.ndarray] | None):
    nodes = [onnx_builders.make_node("Identity", [name], [f"out_{name}"], name=f"id_{name}")
             for name in arrays]
    outputs = [onnx_builders.make_tensor_value_info(f"out_{name}", 1, list(a.shape))
               for name, a in arrays.items()]
    model = onnx_builders.make_model(onnx_builders.make_graph(nodes, "g", [], outputs),
                                     opset_imports=[onnx_builders.make_opsetid("", 17)])
    for name, array in arrays.items():
        tensor = model.graph.initializer.add()
        tensor.CopyFrom(onnx_builders.from_array(array, name))
        if spliced is not None and array.nbytes >= SPLICE_BYTES:
            tensor.raw_data = placeholder(len(spliced))
            spliced.append(array)
    return model


@pytest.mark.parametrize("dtypes", [["<f4"], ["<f4", "i1", "<i8"], ["<f2"], []])
def test_same_bytes_as_the_whole_model(dtypes):
    rng = np.random.default_rng(len(dtypes))
    arrays = {"small": rng.standard_normal(7).astype(np.float32)}
    for i, dtype in enumerate(dtypes):  # big ones around small ones, several length varints
        count = SPLICE_BYTES // np.dtype(dtype).itemsize + 1000 * i
        arrays[f"big{i}"] = rng.standard_normal(count).astype(dtype)
        arrays[f"small{i}"] = np.arange(3, dtype=np.int64)
    spliced: list[np.ndarray] = []
    model = _model(arrays, spliced)
    assert len(spliced) == len(dtypes)
    expected = _model(arrays, None).SerializeToString(deterministic=True)
    assert serialize_spliced(model, spliced) == expected


def test_export_ops_splices_large_weights_only():
    from xdsl.dialects.builtin import TensorType, f32

    store = WeightStore()
    big = np.arange(BIG, dtype=np.float32)
    small = np.arange(4, dtype=np.float32)
    store.add("big", big)
    store.add("small", small)
    ops = [WeightOp("big", TensorType(f32, [BIG])), WeightOp("small", TensorType(f32, [4]))]
    outputs = [op.results[0] for op in ops]
    spliced: list[np.ndarray] = []
    model = export_ops(ops, [], outputs, store, spliced=spliced)
    assert len(spliced) == 1 and np.shares_memory(spliced[0], store["big"])
    whole = export_ops(ops, [], outputs, store).SerializeToString(deterministic=True)
    assert serialize_spliced(model, spliced) == whole


def test_a_missing_placeholder_is_an_error():
    arrays = {"big": np.zeros(BIG, np.float32)}
    model = _model(arrays, None)
    with pytest.raises(AssertionError, match="0 of 1 placeholders"):
        serialize_spliced(model, [arrays["big"]])
