"""Hostile ONNX models given to `esact-cc` (and `esact-cc --run`, `esact-opt`) as whole processes.

Each model is built here with onnx.helper in tmp_path: the model in `model/`, the tools run in
`work/` (the current directory), which holds a `secret.bin` a model must never read, as does
the directory around both. Every run must end with one `prog: error:` line naming the culprit
(node, value, function, file), exit 1, no traceback, no file touched anywhere under tmp_path
and no output written (the -o path absent).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import assert_user_error, run_tool, tree_state
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from esact_cc.frontend.onnx_limits import (
    FOLD_MAX_ELEMENTS,
    MAX_DIM,
    MAX_NODES,
    MAX_OPSET,
    MAX_TENSOR_ELEMENTS,
    MIN_OPSET,
)

SECRET = b"TOP-SECRET-KEY!!" * 2  # 32 bytes: the size of eight float32 values
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs=(X,),
    outputs=(Y,),
    initializers=(),
    opset: int = 17,
    functions=(),
    sparse=(),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "g",
        list(inputs),
        list(outputs),
        list(initializers),
        sparse_initializer=list(sparse),
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("f", 1)] if functions else [])
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions), ir_version=8)


def external(name: str, location: str, dims=(2, 4), data_type=TensorProto.FLOAT) -> TensorProto:
    """A tensor whose bytes are `location` (as a model's author wrote it)."""
    tensor = TensorProto(name=name, data_type=data_type, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(SECRET)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def constant(name: str, tensor: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"/{name}", value=tensor)


def add_xc(c: str = "c") -> onnx.NodeProto:
    return helper.make_node("Add", ["x", c], ["y"], name="/add")


@pytest.fixture
def place(tmp_path: Path):
    """Writes a model into tmp_path/model/ with secrets around it; returns a runner that runs a
    tool in tmp_path/work/ and checks the failure left everything as it was."""
    (tmp_path / "model").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    (tmp_path / "work" / "secret.bin").write_bytes(SECRET)
    np.save(tmp_path / "work" / "x.npy", np.ones((2, 4), np.float32))

    def run(
        model: onnx.ModelProto | bytes,
        *needles: str,
        tool: str = "esact-cc",
        args: Sequence[str] = (),
    ) -> str:
        path = tmp_path / "model" / "m.onnx"
        path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        before = tree_state(tmp_path)
        out = tmp_path / "out" / "m.esb"
        argv = [path, *args] if tool == "esact-opt" else [path, "-o", out, *args]
        line = assert_user_error(run_tool(tool, *argv, cwd=tmp_path / "work"), *needles)
        assert not out.exists()
        assert tree_state(tmp_path) == before
        return line

    return run


# --- confinement: external data only from inside the model's directory ---------------------------
def test_constant_cannot_read_a_file_of_the_current_directory(place):
    # Before: the Constant's location was resolved against the current directory, and the
    # secret landed in the weight store, the binary and --run outputs.
    line = place(
        make_model([constant("c", external("c", "secret.bin")), add_xc()]),
        "node '/c' attribute 'value'",
        "model" + os.sep + "secret.bin",
        "No such file",
    )
    assert "work" not in line


@pytest.mark.parametrize(
    # -o m.esb: the binary (esb) stage; the import that refuses the leak runs at every stage
    "args", [("--run", "--input", "x=x.npy", "--output-dir", "../out"), ("--compile-to", "esb")]
)
def test_constant_leak_refused_with_run_and_at_every_stage(place, tmp_path, args):
    place(
        make_model([constant("c", external("c", "../work/secret.bin")), add_xc()]),
        "node '/c'",
        "'../work/secret.bin'",
        "no '..'",
        args=args,
    )
    assert not any((tmp_path / "out").iterdir())


def test_esact_opt_confines_constant_external_data(place, tmp_path):
    place(
        make_model([constant("c", external("c", str(tmp_path / "secret.bin"))), add_xc()]),
        "node '/c'",
        "relative path",
        tool="esact-opt",
    )


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "..\\secret.bin"])
def test_initializer_location_with_dotdot(place, location):
    place(
        make_model([add_xc()], initializers=[external("c", location)]),
        "initializer 'c'",
        f"'{location}'",
        "no '..'",
    )


def test_initializer_absolute_location(place, tmp_path):
    secret = str(tmp_path / "secret.bin")
    place(
        make_model([add_xc()], initializers=[external("c", secret)]),
        "initializer 'c'",
        secret,
        "relative path",
    )


def test_symlink_leaving_the_model_directory(place, tmp_path):
    (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "secret.bin")
    place(
        make_model([add_xc()], initializers=[external("c", "weights.bin")]),
        "initializer 'c'",
        "'weights.bin' leaves the model's directory",
    )


def test_sparse_initializer_external_values(place):
    values = external("c", "../secret.bin", dims=(8,))
    indices = numpy_helper.from_array(np.arange(8, dtype=np.int64), "c_indices")
    sparse = helper.make_sparse_tensor(values, indices, [2, 4])
    place(make_model([add_xc()], sparse=[sparse]), "sparse initializer 'c'", "no '..'")


def test_external_tensor_inside_a_local_function(place, tmp_path):
    body = [
        constant("k", external("k", str(tmp_path / "secret.bin"))),
        helper.make_node("Add", ["a", "k"], ["b"]),
    ]
    leak = helper.make_function("f", "Leak", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    place(
        make_model(
            [helper.make_node("Leak", ["x"], ["y"], name="/call", domain="f")], functions=[leak]
        ),
        "function 'f.Leak' node '/k' attribute 'value'",
        "relative path",
    )


def test_external_tensor_inside_a_subgraph(place):
    branch = helper.make_graph(
        [constant("k", external("k", "../secret.bin"))],
        "then",
        [],
        [helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 4])],
    )
    clean = helper.make_graph(
        [constant("k", numpy_helper.from_array(np.zeros((2, 4), np.float32)))],
        "else",
        [],
        [helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 4])],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node(
        "If", ["cond"], ["y"], name="/if", then_branch=branch, else_branch=clean
    )
    place(
        make_model([node], initializers=[cond]),
        "node '/if' attribute 'then_branch' subgraph node '/k'",
    )


def test_external_data_inside_the_model_directory_still_works(tmp_path):
    weights = np.arange(8, dtype=np.float32).reshape(2, 4)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.bin").write_bytes(weights.tobytes())
    model = make_model([add_xc()], initializers=[external("c", "w.bin")])
    model.graph.initializer[0].external_data[2].value = str(weights.nbytes)
    onnx.save(model, tmp_path / "model" / "m.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    result = run_tool(
        "esact-cc",
        tmp_path / "model" / "m.onnx",
        "--compile-to",
        "onnx",
        "--run",
        "--input",
        "x=x.npy",
        "--output-dir",
        "out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), weights + 1)


# --- bounds --------------------------------------------------------------------------------------
def doubling_functions(levels: int) -> list[onnx.FunctionProto]:
    """F0 is one Relu; F(i) calls F(i-1) twice: F(levels-1) inlines to 2^(levels-1) nodes."""
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("f", 1)]
    functions = [
        helper.make_function(
            "f", "F0", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], opsets
        )
    ]
    for i in range(1, levels):
        calls = [
            helper.make_node(f"F{i - 1}", ["a"], ["m"], domain="f"),
            helper.make_node(f"F{i - 1}", ["m"], ["b"], domain="f"),
        ]
        functions.append(helper.make_function("f", f"F{i}", ["a"], ["b"], calls, opsets))
    return functions


def test_nested_local_functions_that_double_are_refused_unexpanded(place):
    # 40 levels: 2^39 nodes once inlined; the model file is a few kilobytes.
    model = make_model(
        [helper.make_node("F39", ["x"], ["y"], name="/call", domain="f")],
        functions=doubling_functions(40),
    )
    assert len(model.SerializeToString()) < 4096
    expands = next(i for i in range(40) if 2**i > MAX_NODES)
    place(model, f"local function 'f.F{expands}'", f"more than {MAX_NODES} nodes")


def test_recursive_local_function(place):
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("f", 1)]
    loop = helper.make_function(
        "f", "Again", ["a"], ["b"], [helper.make_node("Again", ["a"], ["b"], domain="f")], opsets
    )
    place(
        make_model(
            [helper.make_node("Again", ["x"], ["y"], name="/call", domain="f")], functions=[loop]
        ),
        "local function 'f.Again' calls itself",
    )


def test_tile_sized_only_by_a_computation_is_not_folded(place):
    # reps = 65536 * 65536, known only once the Mul is folded: the Tile would fold to 64 GiB.
    reps = numpy_helper.from_array(np.array([65536], np.int64))
    nodes = [
        constant("r", reps),
        helper.make_node("Mul", ["r", "r"], ["reps"], name="/mul"),
        constant("base", numpy_helper.from_array(np.ones(4, np.float32))),
        helper.make_node("Tile", ["base", "reps"], ["big"], name="/tile"),
        helper.make_node("ReduceSum", ["big"], ["s"], name="/sum", keepdims=1),
        helper.make_node("Add", ["x", "s"], ["y"], name="/add"),
    ]
    place(make_model(nodes), "'big'", "'/tile'", f"limit of {MAX_DIM}")


@pytest.mark.parametrize(
    "shape, needles",
    [
        ([65536, 65536], ["65536x65536 has 4294967296", f"limit of {MAX_TENSOR_ELEMENTS}"]),
        # 5000 dims of 2: too long for shape inference to see by value, so only the predicted
        # size (2^5000 elements) stops the fold
        ([2] * 5000, ["at least 2^5000 elements", f"folding limit of {FOLD_MAX_ELEMENTS}"]),
    ],
    ids=["inferred", "predicted"],
)
def test_constant_of_shape_beyond_the_limits(place, shape, needles):
    nodes = [
        constant("shape", numpy_helper.from_array(np.array(shape, np.int64))),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], name="/fill"),
        helper.make_node("ReduceSum", ["big"], ["s"], name="/sum", keepdims=0),
        helper.make_node("Add", ["x", "s"], ["y"], name="/add"),
    ]
    place(make_model(nodes), "'big'", "'/fill'", *needles)


def test_dim_of_two_to_the_forty(place):
    big = [1 << 40, 4]
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="/relu")],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, big)],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, big)],
    )
    place(model, "input 'x'", f"dim 0 is {1 << 40}")


@pytest.mark.parametrize("dims", [str(1 << 70), str(MAX_DIM + 1)])
def test_input_shape_beyond_the_dim_limit(place, dims):
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"], name="/relu")],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    place(
        model,
        f"--input-shape 'x={dims}x4'",
        f"limit of {MAX_DIM}",
        args=["--input-shape", f"x={dims}x4"],
    )


# --- one line instead of a traceback -------------------------------------------------------------
def test_invalid_utf8_attribute(place):
    node = helper.make_node("Gelu", ["x"], ["y"], name="/gelu")
    attr = node.attribute.add()
    attr.name, attr.type, attr.s = "approximate", AttributeProto.STRING, b"\xff\xfe"
    place(make_model([node], opset=20), "node '/gelu'", "attribute 'approximate'", "UTF-8")


def test_malformed_constant_tensor(place):
    tensor = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[2, 4], float_data=[1.0])
    place(make_model([constant("c", tensor), add_xc()]), "/c", "float_data size (1)")


def test_declared_output_shape_disagrees_with_the_computed_one(place):
    nodes = [helper.make_node("Transpose", ["x"], ["y"], name="/transpose")]
    place(make_model(nodes), "node name: /transpose", "differ")


def test_type_mismatch(place):
    nodes = [
        helper.make_node("Cast", ["x"], ["xi"], name="/cast", to=TensorProto.INT64),
        helper.make_node("Add", ["x", "xi"], ["y"], name="/add"),
    ]
    place(make_model(nodes), "node name: /add", "inconsistent type")


def test_truncated_model_file(place):
    weights = numpy_helper.from_array(np.ones((64, 4), np.float32), "w")
    whole = make_model(
        [helper.make_node("MatMul", ["w", "x"], ["y"], name="/mm")],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 4])],
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        initializers=[weights],
    ).SerializeToString()
    place(whole[: len(whole) - 300], "cannot read ONNX model", "m.onnx")


@pytest.mark.parametrize("device", ["/dev/zero", "fifo"])
def test_model_that_is_not_a_regular_file(tmp_path, device):
    path = device
    if device == "fifo":
        os.mkfifo(tmp_path / "m.onnx")
        path = str(tmp_path / "m.onnx")
    before = tree_state(tmp_path)
    assert_user_error(
        run_tool("esact-cc", path, "-o", "m.esb", cwd=tmp_path, time_limit=60),
        f"'{path}' is not a regular file",
    )
    assert tree_state(tmp_path) == before


# --- invalid graphs ------------------------------------------------------------------------------
def test_two_nodes_writing_one_value(place):
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="/first"),
        helper.make_node("Neg", ["x"], ["y"], name="/second"),
    ]
    place(make_model(nodes), "'y' is written by two nodes: '/first' and '/second'")


def test_cycle_names_its_nodes(place):
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="/a"),
        helper.make_node("Relu", ["a"], ["b"], name="/b"),
        helper.make_node("Relu", ["a"], ["y"], name="/out"),
    ]
    place(make_model(nodes), "cycle through nodes '/b' -> '/a' -> '/b'")


@pytest.mark.parametrize("opset", [999, MIN_OPSET - 1])
def test_opset_outside_the_supported_range(place, opset):
    place(
        make_model([helper.make_node("Relu", ["x"], ["y"], name="/relu")], opset=opset),
        f"opset {opset}",
        f"supported opsets are {MIN_OPSET} to {MAX_OPSET}",
    )
