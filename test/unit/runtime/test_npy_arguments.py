"""`--input NAME=FILE.npy` parsing shared by esact-cc and esact-run."""

import numpy as np
import pytest

from esact_cc.runtime.cli.npy_arguments import load_input_files, output_file_name
from esact_cc.runtime.errors import UsageError


def test_loads_each_named_file(tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
    inputs = load_input_files([f"x={tmp_path / 'x.npy'}"])
    assert list(inputs) == ["x"] and inputs["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("spec, message", [
    ("x", "bad --input 'x': expected NAME=FILE.npy"),
    ("=a.npy", "bad --input '=a.npy': expected NAME=FILE.npy"),
    ("x={dir}/none.npy", "cannot read --input x '{dir}/none.npy': not found"),
    ("x={dir}/junk.npy", "cannot read --input x '{dir}/junk.npy': not a .npy array: "),
])
def test_bad_specs_are_one_line_errors(tmp_path, spec: str, message: str) -> None:
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(UsageError) as error:
        load_input_files([spec.format(dir=tmp_path)])
    assert str(error.value).startswith(message.format(dir=tmp_path))
    assert "\n" not in str(error.value)


def test_an_input_given_twice_is_refused(tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.zeros(2))
    with pytest.raises(UsageError, match="--input x given twice"):
        load_input_files([f"x={tmp_path / 'x.npy'}"] * 2)


def test_output_file_names_are_safe() -> None:
    assert output_file_name("last_hidden_state") == "last_hidden_state.npy"
    assert output_file_name("../logits:0") == "_logits_0.npy"
