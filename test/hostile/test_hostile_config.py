"""Hostile `--hw` files given to the tools as whole processes: one `prog: error:` line naming
the file and the key, exit 1, no traceback, nothing written (test/unit/runtime/
test_hw_config_errors.py covers every kind of bad file in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from esact_cc.runtime.assembly import assemble
from esact_cc.runtime.esb import write_esb
from esact_cc.runtime.hw_config import load_config
from hostile_run import assert_user_error, run_tool, tree_state

ROOT = Path(__file__).resolve().parents[2]
ASM = ROOT / "test" / "fixtures" / "asm" / "linear_requant_softmax.s"
MODEL = ROOT / "test" / "fixtures" / "models" / "bert_tiny_legacy17.onnx"

# name -> (file bytes, what the error line must say besides the file name)
BAD = {
    "misspelt": (b"[sram]\nmask_bufer = 262144\n",
                 ["unknown key 'sram.mask_bufer'", "did you mean 'sram.mask_buffer'"]),
    "nan": (b"[clock]\nfrequency_hz = nan\n", ["'clock.frequency_hz'", "finite"]),
    "inf": (b"[energy]\nint32_add_pj = inf\n", ["'energy.int32_add_pj'", "finite"]),
    "tib": (b"[sram]\nvector_buffer = 1099511627776\n",
            ["'sram.vector_buffer'", "at most 16777216 bytes"]),
    "negative": (b"[bpu]\nlanes = -1\n", ["'bpu.lanes'", "within [1,"]),
    "wrong_type": (b"[dram]\nlatency_cycles = \"100\"\n", ["'dram.latency_cycles'", "integer"]),
    "deep": (b"x = " + b"[" * 10000 + b"]" * 10000 + b"\n", ["too deeply"]),
    "latin1": ('name = "d\u00e9faut"\n'.encode("latin-1"), ["not UTF-8"]),
}


def bad_config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_bytes(BAD[name][0])
    return path


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "prog.esb"
    write_esb(assemble(ASM.read_text(), load_config().hash), path)
    return path


@pytest.mark.parametrize("name", ["misspelt", "nan", "tib", "wrong_type"])
def test_esact_run_refuses_bad_hw(tmp_path: Path, binary: Path, name: str):
    hw = bad_config(tmp_path, name)
    before = tree_state(tmp_path)
    result = run_tool("esact-run", binary, "--hw", hw, "--report", "r.json", cwd=tmp_path)
    assert_user_error(result, str(hw), *BAD[name][1])
    assert tree_state(tmp_path) == before


def test_esact_run_bounds_an_endless_hw_device(tmp_path: Path, binary: Path):
    result = run_tool("esact-run", binary, "--hw", "/dev/zero", cwd=tmp_path)
    assert_user_error(result, "/dev/zero", "larger than the 1 MiB limit")


@pytest.mark.parametrize("name", ["misspelt", "inf", "deep"])
def test_esact_cc_refuses_bad_hw(tmp_path: Path, name: str):
    hw = bad_config(tmp_path, name)
    before = tree_state(tmp_path)
    result = run_tool("esact-cc", MODEL, "-o", "out.esb", "--hw", hw, cwd=tmp_path)
    assert_user_error(result, str(hw), *BAD[name][1])
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("name", ["negative", "latin1"])
def test_esact_as_refuses_bad_hw(tmp_path: Path, name: str):
    hw = bad_config(tmp_path, name)
    before = tree_state(tmp_path)
    result = run_tool("esact-as", ASM, "-o", "out.esb", "--hw", hw, cwd=tmp_path)
    assert_user_error(result, str(hw), *BAD[name][1])
    assert tree_state(tmp_path) == before
