"""The one `--input` / `--calibration-data` binding syntax and its resolver."""

import numpy as np
import pytest

from esact_cc.runtime.cli.input_bindings import (Binding, parse_binding, read_bindings,
                                                  resolve_bindings)
from esact_cc.runtime.errors import CommandLineError, UsageError

CAP = 1 << 20


@pytest.mark.parametrize("spec, expected", [
    ("all.npz", Binding("--input", "all.npz", "all.npz")),
    ("x=a.npy", Binding("--input", "x=a.npy", "a.npy", "x")),
    ("x=a.npz", Binding("--input", "x=a.npz", "a.npz", "x")),
    ("x=a.npz:images", Binding("--input", "x=a.npz:images", "a.npz", "x", "images")),
    ("x=dir:1/a.npy", Binding("--input", "x=dir:1/a.npy", "dir:1/a.npy", "x")),
])
def test_the_four_forms_parse(spec: str, expected: Binding) -> None:
    assert parse_binding("--input", spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("a.npy", "--input 'a.npy': expected FILE.npz, NAME=FILE.npy"),
    ("=a.npy", "--input '=a.npy': expected NAME=FILE"),
    ("x=", "--input 'x=': expected NAME=FILE"),
    ("x=a.npz:", "--input 'x=a.npz:': no array name after ':'"),
])
def test_malformed_bindings_are_command_line_errors(spec: str, message: str) -> None:
    with pytest.raises(CommandLineError) as error:
        parse_binding("--input", spec)
    assert str(error.value).startswith(message)


@pytest.fixture
def files(tmp_path):
    np.savez(tmp_path / "two.npz", images=np.ones((3, 2), np.float32), labels=np.arange(3))
    np.savez(tmp_path / "one.npz", pixels=np.zeros((3, 2), np.float32))
    np.save(tmp_path / "ids.npy", np.arange(4, dtype=np.int64))
    return tmp_path


def resolve(specs, inputs, **kw):
    return resolve_bindings(read_bindings("--input", specs, CAP), inputs, "--input", **kw)


def test_each_form_reads_the_array_it_names(files) -> None:
    got = resolve([f"x={files}/two.npz:labels", f"y={files}/one.npz", f"z={files}/ids.npy"],
                  ["x", "y", "z"])
    assert got["x"].tolist() == [0, 1, 2]
    assert got["y"].shape == (3, 2) and got["z"].tolist() == [0, 1, 2, 3]


def test_a_whole_archive_binds_by_array_name(files) -> None:
    got = resolve([str(files / "two.npz")], ["labels", "images"])
    assert list(got) == ["labels", "images"] and got["labels"].tolist() == [0, 1, 2]


def test_a_one_array_archive_binds_to_a_one_input_model(files) -> None:
    got = resolve([str(files / "one.npz")], ["pixel_values"])
    assert got["pixel_values"].shape == (3, 2)


def test_extra_arrays_are_an_error_unless_allowed(files) -> None:
    with pytest.raises(UsageError, match="array 'labels' is not an input of the model"):
        resolve([str(files / "two.npz")], ["images"])
    assert list(resolve([str(files / "two.npz")], ["images"], extra_arrays_allowed=True)) == ["images"]


@pytest.mark.parametrize("specs, inputs, error, message", [
    (["x={d}/two.npz"], ["x"], UsageError, "has no array 'x' and more than one array (arrays: "
     "images, labels); name one as x={d}/two.npz:ARRAY"),
    (["x={d}/two.npz:nope"], ["x"], UsageError, "'{d}/two.npz' has no array 'nope' (arrays: "
     "images, labels)"),
    (["w={d}/ids.npy"], ["x"], UsageError, "the model has no input 'w' (inputs: x)"),
    (["x={d}/ids.npy"], ["x", "y"], UsageError, "--input: lacks input(s) y"),
    (["x={d}/ids.npy", "x={d}/ids.npy"], ["x"], CommandLineError, "--input x given twice"),
    (["images={d}/ids.npy", "{d}/two.npz"], ["images", "labels"], CommandLineError,
     "input 'images' is bound twice"),
    (["x={d}/none.npz"], ["x"], UsageError, "cannot read --input '{d}/none.npz': not found"),
])
def test_bad_bindings_are_one_line_errors(files, specs, inputs, error, message) -> None:
    with pytest.raises(error) as raised:
        resolve([spec.format(d=files) for spec in specs], inputs)
    assert message.format(d=files) in str(raised.value)
    assert "\n" not in str(raised.value)
