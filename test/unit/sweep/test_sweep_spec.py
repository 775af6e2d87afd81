"""Sweep specs: a valid one expands to the expected points and compile groups; every kind of
mistake is one ConfigError naming the file and the key (in-process and through the CLI)."""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool
from sweep_specs import TINY, TINY_GROUPS, TINY_POINTS, write_spec

from esact_cc.runtime.errors import ConfigError
from esact_cc.sweep.points import expand
from esact_cc.sweep.spec import load_spec


def test_the_tiny_spec_expands_into_groups_sharing_a_program(tmp_path) -> None:
    path = write_spec(tmp_path)
    groups = expand(load_spec(path), tmp_path, str(path))
    points = [p for g in groups for p in g.points]
    assert len(groups) == TINY_GROUPS and len(points) == TINY_POINTS
    assert len({p.id for p in points}) == TINY_POINTS
    assert sorted(p.index for p in points) == list(range(TINY_POINTS))
    for group in groups:  # one MAC shape and BPU lanes per group; DRAM bandwidth re-timed
        assert len({(p.params["mac_array.rows"], p.params["bpu.lanes"])
                    for p in group.points}) == 1
        assert len({p.params["dram.bandwidth_bytes_per_s"] for p in group.points}) == 2
    assert {p.params.get("sparsity.threshold") for p in points} == {None, 0.9}


@pytest.mark.parametrize("edit, needle", [
    (("[[models]]\nname = \"digits-vit\"", "[[models]]\nname = \"digits-vit\"\nonxx = \"m.onnx\""),
     "models.0.onxx: Extra inputs are not permitted"),
    (("name = \"digits-vit\"", "name = \"other\""),
     "models.0: a model other than 'digits-vit' needs 'onnx' and 'test_data'"),
    (("inputs = [0]", "inputs = [-2]"), "sweep.inputs.0: Input should be greater than or equal"),
    (("accuracy_samples = 3", "accuracy_samples = \"all\""), "sweep.accuracy_samples"),
    (("\"mac_array.rows\"", "\"mac_array.rowz\""),
     "hardware.axes: unknown key 'mac_array.rowz' (did you mean 'mac_array.rows'?)"),
    (("[16, 32]", "[16, 0]"), "hardware.axes: 'mac_array.rows' must be within [1, 65535], got 0"),
    (("[16, 32]", "[]"), "hardware.axes.mac_array.rows: List should have at least 1 item"),
    (("threshold = [0.9]", "treshold = [0.9]"),
     "sparsity.1: unknown option 'treshold' (did you mean 'threshold'?"),
    (("scheme = \"spls\"", "scheme = \"spl\""),
     "sparsity.1: unknown sparsity scheme 'spl' (did you mean 'spls'?"),
])
def test_a_bad_spec_is_one_error_naming_file_and_key(tmp_path, edit, needle) -> None:
    old, new = edit
    assert old in TINY
    path = write_spec(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: ")
    assert needle in str(error.value)
    assert "\n" not in str(error.value)


def test_the_cli_prints_spec_errors_as_one_line(tmp_path) -> None:
    write_spec(tmp_path, TINY.replace("\"bpu.lanes\"", "\"bpu.lane\""))
    result = run_tool("esact-sweep", "sweep.toml", "-o", "out", cwd=tmp_path)
    assert_user_error(result, "sweep.toml: hardware.axes: unknown key 'bpu.lane'")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_not_toml_and_a_missing_spec_are_one_line_errors(tmp_path) -> None:
    (tmp_path / "bad.toml").write_text("[[models]\n")
    assert_user_error(run_tool("esact-sweep", "bad.toml", "-o", "out", cwd=tmp_path),
                      "bad.toml: not valid TOML")
    assert_user_error(run_tool("esact-sweep", "none.toml", "-o", "out", cwd=tmp_path),
                      "cannot read sweep spec 'none.toml': not found")


def test_too_many_points_are_refused_before_expanding(tmp_path) -> None:
    axes = "\n".join(f'"energy.{name}" = [{", ".join(str(0.1 * k) for k in range(1, 11))}]'
                      for name in ("int8_mul_pj", "int32_add_pj", "int8_add_pj", "fp32_add_pj",
                                   "fp32_mul_pj", "leak_int32_add_mw"))
    path = write_spec(tmp_path, TINY.replace('"bpu.lanes" = [256, 512]', axes))
    with pytest.raises(ConfigError, match="has 8,000,000 points, more than the 1,000,000"):
        load_spec(path)
