"""Bad hardware TOML files: each is one ConfigError line naming the file and the key."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import pytest
from esact_cc.runtime.bounded_read import CONFIG_FILE_CAP
from esact_cc.runtime.errors import ConfigError
from esact_cc.runtime.hw_config import HardwareConfig, load_config
from esact_cc.runtime.hw_params import schema

TIB = 1 << 40

# name -> (file text, what the one error line must contain besides the file name)
BAD_FILES = {
    "unknown_key": ("[sram]\nscratch_buffer = 4096\n",
                    ["unknown key 'sram.scratch_buffer'", "valid keys in [sram]", "mask_buffer"]),
    "misspelt_key": ("[sram]\nwieght_buffer = 4096\n",
                     ["'sram.wieght_buffer'", "did you mean 'sram.weight_buffer'"]),
    "misspelt_table": ("[mac_aray]\nrows = 16\n", ["'mac_aray'", "did you mean 'mac_array'"]),
    "key_in_wrong_table": ("[sram]\nlanes = 8\n", ["'sram.lanes'", "did you mean 'bpu.lanes'"]),
    "nan": ("[clock]\nfrequency_hz = nan\n", ["'clock.frequency_hz'", "finite", "nan"]),
    "inf": ("[energy]\ndram_pj_per_byte = inf\n", ["'energy.dram_pj_per_byte'", "finite"]),
    "minus_inf": ("[technology]\nvdd_v = -inf\n", ["'technology.vdd_v'", "finite"]),
    "nan_in_array": ("[energy]\nsram_anchor_pj_per_64bit = [10.0, nan, 100.0]\n",
                     ["'energy.sram_anchor_pj_per_64bit'", "finite"]),
    "negative": ("[dram]\nlatency_cycles = -1\n", ["'dram.latency_cycles'", "within [1,", "-1"]),
    "negative_energy": ("[energy]\nint8_mul_pj = -0.2\n", ["'energy.int8_mul_pj'", "within [0,"]),
    "zero_clock": ("[clock]\nfrequency_hz = 0\n", ["'clock.frequency_hz'", "within"]),
    "tib_buffer": (f"[sram]\nweight_buffer = {TIB}\n",
                   ["'sram.weight_buffer'", "at most 4194304 bytes", "WBUF address", str(TIB)]),
    "tib_dram": (f"[dram]\ncapacity_bytes = {TIB}\n",
                 ["'dram.capacity_bytes'", "within [1, 4294967296]"]),
    "int_beyond_float": ("[dram]\nbandwidth_bytes_per_s = 1" + "0" * 400 + "\n",
                         ["'dram.bandwidth_bytes_per_s'", "within"]),
    "partial_int32_buffer": ("[sram]\naccumulator_buffer = 1023\n",
                             ["'sram.accumulator_buffer'", "multiple of 4 bytes"]),
    "string_for_int": ("[mac_array]\nrows = \"32\"\n", ["'mac_array.rows'", "an integer"]),
    "float_for_int": ("[mac_array]\nrows = 32.5\n", ["'mac_array.rows'", "an integer"]),
    "bool_for_number": ("[sfu]\nlanes = true\n", ["'sfu.lanes'", "an integer"]),
    "scalar_for_array": ("[energy]\nsram_anchor_bytes = 8192\n",
                         ["'energy.sram_anchor_bytes'", "an array of integers"]),
    "scalar_for_table": ("sram = 4096\n", ["'sram' must be a table"]),
    "table_for_scalar": ("[mac_array.rows]\nvalue = 32\n", ["'mac_array.rows'", "an integer"]),
    "anchors_not_increasing": ("[energy]\nsram_anchor_bytes = [32768, 8192, 1048576]\n",
                               ["'energy.sram_anchor_bytes'", "strictly increasing"]),
    "anchors_length": ("[energy]\nsram_anchor_pj_per_64bit = [10.0, 20.0]\n",
                       ["'energy.sram_anchor_pj_per_64bit'", "one energy per"]),
    "empty_name": ("name = \"\"\n", ["'name'", "length [1, 100]"]),
    "nested_10000_deep": ("x = " + "[" * 10000 + "]" * 10000 + "\n", ["too deeply"]),
    "nested_tables_10000_deep": ("[" + ".".join(["deep"] * 10000) + "]\n",
                                 ["unknown key 'deep'"]),
    "not_toml": ("[sram\nweight_buffer = 1\n", ["not valid TOML", "line 1"]),
}


def assert_one_line(exc: pytest.ExceptionInfo[ConfigError], path: Path, needles: list[str]):
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, f"'{needle}' not in: {message}"


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_one_line_naming_file_and_key(tmp_path: Path, name: str):
    text, needles = BAD_FILES[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_one_line(exc, path, needles)


def test_non_utf8_file(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "d\u00e9faut"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_one_line(exc, path, ["not UTF-8", "byte 9"])


def test_large_file_is_refused_at_the_cap(tmp_path: Path):
    path = tmp_path / "large.toml"
    path.write_text("# padding\n" * (CONFIG_FILE_CAP // 10 + 1))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_one_line(exc, path, ["larger than the 1 MiB limit"])


def test_endless_fifo_is_refused_at_the_cap(tmp_path: Path):
    path = tmp_path / "endless.toml"
    os.mkfifo(path)
    written = []

    def write_forever() -> None:
        with open(path, "wb") as fifo:  # blocks until the loader opens the other end
            try:
                while True:
                    written.append(fifo.write(b"#" * 65536))
            except BrokenPipeError:  # the loader stopped reading
                pass

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    writer.join(timeout=10)
    assert_one_line(exc, path, ["larger than the 1 MiB limit"])
    assert not writer.is_alive() and sum(written) <= CONFIG_FILE_CAP + (2 << 20)


def test_directory_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


# --- every parameter, not only the ones in the table above --------------------------------

LEAVES = schema(HardwareConfig)
NUMERIC = sorted(k for k, leaf in LEAVES.items() if leaf.kind is not str)


def table_with(key: str, value: object) -> dict:
    *tables, name = key.split(".")
    table: dict = {name: [value, value] if LEAVES[key].is_array else value}
    for t in reversed(tables):
        table = {t: table}
    return table


@pytest.mark.parametrize("key", sorted(k for k in NUMERIC if LEAVES[k].kind is float))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_parameter_must_be_finite(key: str, value: float):
    with pytest.raises(ConfigError, match=f"bad.toml: '{key}' must be a finite number"):
        HardwareConfig.from_dict(table_with(key, value), "bad.toml")


@pytest.mark.parametrize("key", NUMERIC)
def test_every_numeric_parameter_has_a_range(key: str):
    spec = LEAVES[key].param
    assert spec.lo is not None and spec.hi is not None or key.startswith("sram."), key
    kind = LEAVES[key].kind
    below = kind(spec.lo) - (1 if kind is int else abs(spec.lo) + 1)
    with pytest.raises(ConfigError, match=f"bad.toml: '{key}' must be"):
        HardwareConfig.from_dict(table_with(key, below), "bad.toml")
    above = TIB * TIB if spec.hi is None else kind(spec.hi) * 2 + 1
    with pytest.raises(ConfigError, match=f"bad.toml: '{key}' must be"):
        HardwareConfig.from_dict(table_with(key, above), "bad.toml")
