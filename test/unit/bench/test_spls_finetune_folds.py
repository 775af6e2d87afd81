"""bench/spls_finetune_folds.py's two-fold choice and bench/spls_finetune_soup.py's weight
average, on synthetic measurements and a tiny onnx.helper graph (no torch, no digits model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from spls_finetune_folds import HALVES, frontier_360, two_fold  # noqa: E402
from spls_finetune_soup import average_models  # noqa: E402

A, B = HALVES


def point(right: str, removed: float) -> dict:
    return {"right": right, "vs_dense_program": removed, "vs_full_dense_model": removed + 0.1}


REFERENCE = {A: "1111111111", B: "1111111111"}
"""The bundled model's dense predictions on two halves of 10 images: all right."""
BUNDLED = {A: {"dense": point("1111111111", 0.0)}, B: {"dense": point("1111111111", 0.0)}}


def test_each_fold_chooses_on_its_half_and_reports_on_the_other():
    """`lucky` is within budget on half A only, `steady` on both: fold 1 (tuned on A) takes
    lucky, the most removed there, and pays its loss on B; fold 2 (tuned on B) cannot see
    lucky's good half and takes steady."""
    tuned = {A: {"lucky": point("1111111111", 0.6), "steady": point("1111111110", 0.4)},
             B: {"lucky": point("1111110000", 0.6), "steady": point("1111111110", 0.4)}}
    result = two_fold({"bundled": BUNDLED, "tuned/0": tuned}, REFERENCE, budget=10.0)
    first, second = result["folds"]
    assert (first["tuned_on"], first["reported_on"]) == (A, B)
    assert (first["model"], first["setting"]) == ("tuned/0", "lucky")
    assert first["tune_loss_points"] == 0.0 and first["held_loss_points"] == 40.0
    assert (second["model"], second["setting"]) == ("tuned/0", "steady")
    assert second["held_loss_points"] == 10.0
    pooled = result["pooled"]
    assert pooled["inputs"] == 20
    assert pooled["loss_points"] == pytest.approx(25.0)  # 5 of 20 images lost
    assert pooled["vs_dense_program"] == pytest.approx(0.5)


def test_nothing_within_budget_falls_back_to_the_bundled_dense_program():
    tuned = {h: {"0.8": point("1111100000", 0.5)} for h in HALVES}
    result = two_fold({"bundled": BUNDLED, "tuned/0": tuned}, REFERENCE, budget=1.0)
    assert [(f["model"], f["setting"]) for f in result["folds"]] == [("bundled", "dense")] * 2
    assert result["pooled"]["loss_points"] == 0.0
    assert result["pooled"]["vs_dense_program"] == 0.0


def test_the_360_frontier_pools_both_halves_without_choosing():
    tuned = {A: {"dense": point("1111111111", 0.0), "0.8": point("1111111100", 0.5)},
             B: {"dense": point("1111111110", 0.0), "0.8": point("1111111111", 0.7)}}
    frontier = frontier_360(tuned, REFERENCE)
    assert frontier["dense"]["loss_points"] == pytest.approx(5.0)
    assert frontier["0.8"]["loss_points"] == pytest.approx(10.0)
    assert frontier["0.8"]["vs_dense_program"] == pytest.approx(0.6)


def _linear_model(path: Path, weight: np.ndarray, op: str = "MatMul") -> Path:
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_the_soup_is_the_elementwise_mean_in_the_same_graph(tmp_path):
    first = _linear_model(tmp_path / "a.onnx", np.array([[1.0, 2.0], [3.0, 4.0]]))
    second = _linear_model(tmp_path / "b.onnx", np.array([[3.0, 2.0], [5.0, 0.0]]))
    soup = average_models([first, second])
    assert soup.graph.node == onnx.load(str(first)).graph.node
    weight = numpy_helper.to_array(soup.graph.initializer[0])
    np.testing.assert_array_equal(weight, np.array([[2.0, 2.0], [4.0, 2.0]], np.float32))


def test_the_soup_refuses_models_of_different_graphs(tmp_path):
    first = _linear_model(tmp_path / "a.onnx", np.eye(2))
    other = _linear_model(tmp_path / "b.onnx", np.eye(2), op="Add")
    with pytest.raises(SystemExit, match="not the same graph"):
        average_models([first, other])
