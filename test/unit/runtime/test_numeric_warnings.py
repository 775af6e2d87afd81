"""numpy floating-point warnings become one line per kind, without a source path; other
warnings pass through."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from esact_cc.runtime.numeric_warnings import numpy_warnings_as_lines


def test_overflow_and_invalid_are_counted_then_said_once_each(capsys):
    said: list[str] = []
    big = np.full(4, 1e30, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with numpy_warnings_as_lines(said.append):
            big * big  # overflow
            big * big  # the same kind again
            np.zeros(2) / np.zeros(2)  # invalid value
    assert said == [
        "warning: overflow encountered in multiply (numpy, 2 places); results may hold inf or NaN",
        "warning: invalid value encountered in divide (numpy, 1 place); results may hold inf or NaN",
    ]
    assert capsys.readouterr().err == ""  # nothing printed with a file path


def test_other_warnings_pass_through():
    said: list[str] = []
    with pytest.warns(UserWarning, match="not numpy"), numpy_warnings_as_lines(said.append):
        warnings.warn("not numpy", UserWarning)
    assert said == []
