"""typed_options: one rule per option field, applied the same way to text, JSON and Python."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from esact_cc.passes.insert_spls import InsertSplsPass, LayerOptions
from esact_cc.pipeline import pass_option_names
from esact_cc.runtime.errors import CompileError
from esact_cc.typed_options import (MAX_LAYER_INDEX, convert_value, format_layer_overrides, option,
                                    option_specs, parse_assignment, parse_layer_index,
                                    parse_layer_overrides)


@dataclass(frozen=True)
class Knobs:
    count: int = option(3, low=0, high=10)
    ratio: float = option(0.5, low=0.0, high=1.0, low_open=True)
    mode: str = option("fast", choices=("fast", "slow"))
    flag: bool = option(False)
    protect: int = option(1, low=0)
    margin: float = option(0.5, low=0.0, low_open=True)


@pytest.mark.parametrize("name, value, expected", [
    ("count", "4", 4), ("count", 4.0, 4), ("count", " 10 ", 10), ("ratio", "1", 1.0),
    ("ratio", 1, 1.0), ("mode", "slow", "slow"), ("flag", "true", True), ("flag", False, False),
    ("flag", "0", False),
])
def test_values_from_text_json_and_python_convert_to_the_field_type(name, value, expected):
    converted = convert_value(Knobs, name, value, "--knob")
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize("name, value, message", [
    ("count", "²", "count must be an integer, got '²'"),  # int('²') would be 2
    ("count", "١٢", "count must be an integer"),  # Arabic-Indic digits
    ("count", 2.5, "count must be an integer, got 2.5"),
    ("count", True, "count must be an integer, got True"),
    ("count", "11", "count must be in [0, 10], got '11'"),
    ("count", -1, "count must be in [0, 10], got -1"),
    ("count", "9" * 5000, "count must be an integer"),
    ("ratio", "0", "ratio must be in (0, 1], got '0'"),
    ("ratio", "nan", "ratio must be finite"),
    ("ratio", float("-inf"), "ratio must be finite"),
    ("ratio", "-1e308", "ratio must be in (0, 1]"),
    ("mode", "fast;0:count=9", "mode must be one of fast|slow"),
    ("mode", 3, "mode must be a string, got 3"),
    ("flag", "yes", "flag must be true or false"),
    ("protect", -1, "protect must be >= 0, got -1"),  # a low bound alone
    ("margin", "0", "margin must be > 0, got '0'"),
    ("cuont", 1, "unknown option 'cuont' (did you mean 'count'? valid: count, ratio, mode, flag, protect, margin)"),
])
def test_bad_values_and_names_are_one_line_errors(name, value, message):
    with pytest.raises(CompileError) as error:
        convert_value(Knobs, name, value, "--knob")
    line = str(error.value)
    assert line.startswith(f"--knob: {message}") and "\n" not in line and len(line) < 200


@pytest.mark.parametrize("text", ["²", "-1", "1.0", " ", "", "0x1", str(MAX_LAYER_INDEX + 1),
                                  "1" * 40])
def test_a_layer_index_is_plain_ascii_digits_within_bounds(text):
    with pytest.raises(CompileError, match="bad layer index"):
        parse_layer_index(text, "where")


def test_assignments_and_per_layer_text_round_trip():
    assert parse_assignment("count=3", "w") == (None, "count", "3")
    assert parse_assignment("12:ratio=0.25", "w") == (12, "ratio", "0.25")
    layers = {0: {"count": 2, "mode": "slow"}, 7: {"ratio": 0.1, "flag": True}}
    text = format_layer_overrides(Knobs, layers)
    assert text == "0:count=2,mode=slow;7:flag=true,ratio=0.1"
    assert parse_layer_overrides(Knobs, text, "w") == layers


def test_per_layer_text_cannot_carry_options_nobody_gave():
    """A string value with separators would inject other layers' options if pasted."""
    with pytest.raises(CompileError, match="mode must be one of fast|slow"):
        format_layer_overrides(Knobs, {0: {"mode": "fast;3:count=9"}})
    with pytest.raises(CompileError, match="layer 0: unknown option 'cout'"):
        parse_layer_overrides(Knobs, "0:cout=1", "w")


def test_insert_spls_fields_are_derived_from_layer_options():
    pass_fields = {name.replace("_", "-") for name in pass_option_names(InsertSplsPass)}
    assert pass_fields == set(option_specs(LayerOptions)) | {"layers"}
    assert InsertSplsPass().base_options() == LayerOptions()


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 100000}, "insert-spls: window must be in [0, 65535], got 100000"),
    ({"threshold": -1e308}, "insert-spls: threshold must be in [-1, 2], got -1e+308"),
    ({"k_ratio": 0.0}, "insert-spls: k-ratio must be in (0, 1], got 0.0"),
    ({"hlog_bits": 1}, "insert-spls: hlog-bits must be in [2, 16], got 1"),
    ({"similarity": "cosine"}, "insert-spls: similarity must be one of overlap|cosprob"),
    ({"layers": "²:window=1"}, "insert-spls: bad layer index '²'"),
    ({"layers": "0:window=2,windw=3"}, "insert-spls: layer 0: unknown option 'windw' "
                                       "(did you mean 'window'?"),
])
def test_insert_spls_rejects_bad_options_when_built(kwargs, message):
    with pytest.raises(CompileError) as error:
        InsertSplsPass(**kwargs)
    assert str(error.value).startswith(message)
