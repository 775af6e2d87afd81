"""Weight store: deterministic .npz, lazy load, names, explicit store per module, IR file convention."""

from __future__ import annotations

import numpy as np
import pytest
from esact_cc.runtime.errors import CompileError

from esact_cc.api import load_ir, write_ir
from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.weight_store import WEIGHT_STORE_ATTR, WeightStore


def sample() -> dict[str, np.ndarray]:
    return {"enc/l0.w": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1, 2], np.int64),
            "mask": np.array([True, False])}


def test_save_is_deterministic_and_order_independent(tmp_path):
    WeightStore(sample()).save(tmp_path / "one.npz")
    WeightStore(dict(reversed(list(sample().items())))).save(tmp_path / "two.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()


def test_round_trip_through_npz_and_numpy_load(tmp_path):
    WeightStore(sample()).save(tmp_path / "w.npz")
    loaded = WeightStore.load(tmp_path / "w.npz")
    assert sorted(loaded) == sorted(sample()) and len(loaded) == 3
    for name, value in sample().items():
        np.testing.assert_array_equal(loaded[name], value)
        assert loaded[name].dtype == value.dtype
    with np.load(tmp_path / "w.npz") as plain:  # a plain numpy archive
        np.testing.assert_array_equal(plain["enc/l0.w"], sample()["enc/l0.w"])


def test_arrays_are_read_only_and_not_copied():
    value = np.zeros(4, np.float32)
    store = WeightStore({"w": value})
    assert np.shares_memory(store["w"], value)
    with pytest.raises(ValueError):
        store["w"][0] = 1.0
    value[0] = 2.0  # the caller's array stays writable


def test_names_are_unique_and_missing_names_are_errors():
    store = WeightStore(sample())
    assert store.unique_name("a") == "a_1" and store.unique_name("b") == "b"
    with pytest.raises(CompileError, match="weight 'a' is already in the weight store"):
        store.add("a", np.zeros(1))
    with pytest.raises(CompileError, match="weight 'nope' is not in the weight store"):
        store["nope"]


def test_corrupt_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(CompileError, match="cannot read weight store"):
        WeightStore.load(bad)


def test_ir_file_names_its_weights_relative_to_itself(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(20, dtype=np.float32).reshape(5, 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "w")])
    module, store = import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    write_ir(module, store, tmp_path / "out" / "model.mlir")
    text = (tmp_path / "out" / "model.mlir").read_text()
    assert f'{WEIGHT_STORE_ATTR} = "model.npz"' in text
    (tmp_path / "out").rename(tmp_path / "moved")  # IR and weights move together
    again = load_ir(tmp_path / "moved" / "model.mlir")
    np.testing.assert_array_equal(again.store["w"], w)
    x = np.ones((1, 5), np.float32)
    np.testing.assert_allclose(again.run({"x": x})["y"], x @ w)
    # Re-writing an unchanged store in the same directory reuses its .npz.
    write_ir(again.module, again.store, tmp_path / "moved" / "copy.mlir")
    assert not (tmp_path / "moved" / "copy.npz").exists()
    assert f'{WEIGHT_STORE_ATTR} = "model.npz"' in (tmp_path / "moved" / "copy.mlir").read_text()


def _projection_model(w: np.ndarray):
    """x [1, 4, 8] -> x @ w: one linear whose weight is named "w"."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/proj/MatMul")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_two_modules_with_different_stores_never_see_each_others_weights(capsys):
    """The store travels with the module explicitly (no process-wide module -> store table):
    two models whose weights have the same names compile and run side by side, each with its
    own values, and what the passes add to one store (lifted, INT8) never appears in the other."""
    from esact_cc import api

    rng = np.random.default_rng(5)
    w_a = rng.standard_normal((8, 8)).astype(np.float32)
    w_b = -3 * w_a
    a = api.compile(_projection_model(w_a), stage="transformer")
    b = api.compile(_projection_model(w_b), stage="transformer")
    x = rng.standard_normal((1, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(a.run({"x": x})["y"], x @ w_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.run({"x": x})["y"], x @ w_b, rtol=1e-5, atol=1e-5)

    qa = api.compile(_projection_model(w_a), stage="quantized")
    qb = api.compile(_projection_model(w_b), stage="quantized")
    assert set(qa.store) == set(qb.store) and qa.store is not qb.store
    for name in ("w", "w.int8", "w.scale"):  # same names, each store its own values
        assert not np.array_equal(qa.store[name], qb.store[name]), name
    assert np.abs(qb.run({"x": x})["y"] - x @ w_b).max() < 0.05 * np.abs(x @ w_b).max()
    capsys.readouterr()
