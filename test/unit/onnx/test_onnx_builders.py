"""The frontend's onnx without `import onnx` (esact_cc/frontend/onnx_core.py, onnx_builders.py)
against the onnx package itself: the same messages byte for byte, the same arrays, the same
errors; a compile never imports the package (nor ml_dtypes), and the package imported after
onnx_core is whole and shares its classes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnx.checker
import onnx.helper
import onnx.inliner
import onnx.numpy_helper
import onnx.shape_inference
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esact_cc.frontend import onnx_builders, onnx_core
from esact_cc.frontend.onnx_builders import NATIVE_DTYPES

NATIVE = sorted(NATIVE_DTYPES)


def _outcome(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    """What a call gives: ("ok", serialized bytes or array) or ("error", type, message)."""
    try:
        result = function(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - comparing errors is the point
        return ("error", type(e), str(e))
    if isinstance(result, np.ndarray):
        return ("ok", result.dtype, result.shape, result.tobytes())
    return ("ok", result.SerializeToString())


def test_the_classes_are_the_onnx_packages():
    assert onnx_core.ModelProto is onnx.ModelProto
    assert onnx_core.TensorProto is onnx.TensorProto
    assert onnx_core.IR_VERSION == onnx.IR_VERSION
    assert onnx_core.ValidationError is onnx.checker.ValidationError
    assert onnx_core.onnx_opset_version() == onnx.defs.onnx_opset_version()


@st.composite
def _tensors(draw):  # type: ignore[no-untyped-def]
    """A TensorProto of a native element type, raw or in its typed field, whose data may not
    match its dims."""
    onnx_type = draw(st.sampled_from(NATIVE))
    dtype, (field, _) = NATIVE_DTYPES[onnx_type]
    dims = draw(st.lists(st.integers(0, 3), max_size=3))
    count = int(np.prod(dims, dtype=np.int64)) + draw(st.sampled_from([0, 0, 0, 1, -1]))
    values = np.random.default_rng(draw(st.integers(0, 99))).integers(0, 200, max(count, 0))
    array = values.astype(dtype)
    tensor = onnx.TensorProto(data_type=onnx_type, dims=dims)
    if draw(st.booleans()):
        tensor.raw_data = array.tobytes()
    elif field == "int32_data":
        tensor.int32_data.extend(array.view(np.uint16).astype(np.int32).tolist()
                                 if array.dtype == np.float16 else array.astype(np.int32).tolist())
    else:
        getattr(tensor, field).extend(array.tolist())
    return tensor


@settings(max_examples=300, deadline=None)
@given(_tensors())
def test_to_array_is_numpy_helpers(tensor):
    assert _outcome(onnx_builders.to_array, tensor) == _outcome(onnx.numpy_helper.to_array, tensor)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NATIVE), st.lists(st.integers(0, 3), max_size=3), st.booleans())
def test_from_array_is_numpy_helpers(onnx_type, shape, named):
    dtype = NATIVE_DTYPES[onnx_type][0]
    array = np.arange(int(np.prod(shape, dtype=np.int64))).astype(dtype).reshape(shape)
    name = "w" if named else None
    assert _outcome(onnx_builders.from_array, array, name) == \
        _outcome(onnx.numpy_helper.from_array, array, name)
    assert onnx_builders.np_dtype_to_tensor_dtype(array.dtype) == \
        onnx.helper.np_dtype_to_tensor_dtype(array.dtype)


@pytest.mark.parametrize("array", [
    np.array(["a", "bc"], dtype=object), np.zeros(3, dtype=">f4"), np.zeros(2, np.complex64),
    np.float32(1.5), np.zeros((2, 2), np.float16)[:, :1]])
def test_other_arrays_convert_as_numpy_helper_does(array):
    assert _outcome(onnx_builders.from_array, array, "x") == \
        _outcome(onnx.numpy_helper.from_array, array, "x")


def test_other_tensors_convert_as_numpy_helper_does():
    bfloat16 = onnx.TensorProto(data_type=onnx.TensorProto.BFLOAT16, dims=[2], int32_data=[1, 2])
    strings = onnx.TensorProto(data_type=onnx.TensorProto.STRING, dims=[1], string_data=[b"a"])
    undefined = onnx.TensorProto(dims=[1], raw_data=b"\0")
    for tensor in (bfloat16, strings, undefined):
        assert _outcome(onnx_builders.to_array, tensor) == \
            _outcome(onnx.numpy_helper.to_array, tensor)


ATTRIBUTE_VALUES = [
    3, np.int64(-2), True, 2.5, np.float32(0.1), "text", b"\xff", [1, 2], (1.0, 2), ["a", b"b"],
    [], [1, "a"], {"a": 1}, None, onnx.numpy_helper.from_array(np.ones(2, np.float32), "t"),
    [onnx.numpy_helper.from_array(np.ones(1, np.int64))], onnx.helper.make_graph([], "g", [], []),
    onnx.helper.make_tensor_type_proto(1, [2]), onnx.SparseTensorProto(),
]


@pytest.mark.parametrize("value", ATTRIBUTE_VALUES, ids=repr)
@pytest.mark.parametrize("attr_type", [None, onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS,
                                       onnx.AttributeProto.STRINGS, onnx.AttributeProto.INT])
def test_make_attribute_is_helpers(value, attr_type):
    assert _outcome(onnx_builders.make_attribute, "a", value, attr_type=attr_type) == \
        _outcome(onnx.helper.make_attribute, "a", value, attr_type=attr_type)


@pytest.mark.parametrize("shape", [None, [], [1, "n", None], [np.int64(2)], [1.5]], ids=repr)
def test_value_infos_and_type_protos_are_helpers(shape):
    assert _outcome(onnx_builders.make_tensor_value_info, "v", 1, shape) == \
        _outcome(onnx.helper.make_tensor_value_info, "v", 1, shape)
    assert _outcome(onnx_builders.make_tensor_type_proto, 7, shape) == \
        _outcome(onnx.helper.make_tensor_type_proto, 7, shape)


def _model(builders):  # type: ignore[no-untyped-def]
    node = builders.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1, alpha=None, beta=0.5)
    plain = builders.make_node("Relu", ["y"], ["z"], domain="")
    x = builders.make_tensor_value_info("x", 1, [1, 2])
    z = builders.make_value_info("z", onnx.helper.make_tensor_type_proto(1, [1, 3]))
    graph = builders.make_graph([node, plain], "m", [x], [z],
                                [onnx.numpy_helper.from_array(np.ones((3, 2), np.float32), "w")])
    return [builders.make_model(graph, opset_imports=[builders.make_opsetid("", 17)],
                                ir_version=8, producer_name="p"),
            builders.make_model(graph)]


def test_models_are_helpers():
    assert [m.SerializeToString() for m in _model(onnx_builders)] == \
        [m.SerializeToString() for m in _model(onnx.helper)]


def test_checker_inference_and_inliner_are_onnxs():
    model = _model(onnx.helper)[0]
    assert onnx_core.infer_shapes(model, True, True, True) == \
        onnx.shape_inference.infer_shapes(model, True, True, True)
    onnx_core.check_model(model, full_check=True)
    model.graph.node[0].input[1] = "missing"
    for check in (onnx_core.check_model, onnx.checker.check_model):
        with pytest.raises(onnx.checker.ValidationError, match="missing"):
            check(model, full_check=True)
    function = onnx.helper.make_function("local", "f", ["a"], ["b"],
                                         [onnx.helper.make_node("Relu", ["a"], ["b"])],
                                         [onnx.helper.make_opsetid("", 17)])
    caller = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("f", ["x"], ["y"], domain="local")], "c",
                               [onnx.helper.make_tensor_value_info("x", 1, [2])],
                               [onnx.helper.make_tensor_value_info("y", 1, [2])]),
        opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("local", 1)],
        functions=[function])
    assert onnx_core.inline_local_functions(caller) == onnx.inliner.inline_local_functions(caller)


def _fresh_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_compile_imports_neither_onnx_nor_ml_dtypes():
    code = ("import sys\n"
            "from esact_cc import api\n"
            "from esact_cc.bundled_model import MODELS_DIR\n"
            "api.compile(str(MODELS_DIR / 'digits_vit.onnx'), stage='esact')\n"
            "print(sorted(m for m in ('onnx', 'ml_dtypes') if m in sys.modules))\n")
    assert _fresh_python(code) == "[]"


def test_onnx_imported_after_onnx_core_is_whole():
    code = ("from esact_cc.frontend import onnx_core\n"
            "import onnx, onnx.helper, onnx.numpy_helper, onnx.reference\n"
            "assert onnx.ModelProto is onnx_core.ModelProto\n"
            "assert onnx.onnx_ml_pb2.ModelProto is onnx_core.ModelProto\n"
            "assert onnx.onnx_cpp2py_export.checker.ValidationError is onnx_core.ValidationError\n"
            "model = onnx.helper.make_model(onnx.helper.make_graph(\n"
            "    [onnx.helper.make_node('Relu', ['x'], ['y'])], 'g',\n"
            "    [onnx.helper.make_tensor_value_info('x', 1, [2])],\n"
            "    [onnx.helper.make_tensor_value_info('y', 1, [2])]))\n"
            "onnx.checker.check_model(model, full_check=True)\n"
            "import numpy as np\n"
            "print(onnx.reference.ReferenceEvaluator(model).run(None, {'x': -np.ones(2, 'f')}))\n")
    assert _fresh_python(code) == "[array([0., 0.], dtype=float32)]"
