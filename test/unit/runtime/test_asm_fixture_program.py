"""The hand-assembled tiled INT8 linear + requantize + softmax program matches numpy exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from esact_cc.runtime.assembly import assemble
from esact_cc.runtime.esb import read_esb
from esact_cc.runtime.functional import execute
from esact_cc.runtime.hw_config import load_config

FIXTURE = Path(__file__).parents[2] / "fixtures" / "asm" / "linear_requant_softmax.s"


def reference(x, w, bias, mult, dq):
    acc = x.astype(np.int64) @ w.astype(np.int64) + bias
    y = np.clip(np.rint(acc * mult.astype(np.float64)), -127, 127).astype(np.int8)
    logits = (acc * dq.astype(np.float64)).astype(np.float32).astype(np.float64)  # VBUF fp32
    z = logits * float(np.float32(0.125))
    valid = np.arange(48)[None, :] <= np.arange(8)[:, None] + 40  # causal, offset 40
    z = np.where(valid, z, -np.inf)
    e = np.where(valid, np.exp(z - z.max(axis=1, keepdims=True)), 0.0)
    return y, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(-128, 128, (8, 32)).astype(np.int8),
            "w": rng.integers(-128, 128, (32, 48)).astype(np.int8),
            "bias": rng.integers(-20000, 20000, 48).astype(np.int32),
            "mult": (rng.random(48) * 4e-3).astype(np.float32),
            "dq": (rng.random(48) * 1e-4).astype(np.float32)}


def test_hand_assembled_program_matches_numpy_exactly() -> None:
    config = load_config()
    program = assemble(FIXTURE.read_text(), config.hash)
    for seed in range(5):
        feed = inputs(seed)
        result = execute(program, feed, config)
        y, p = reference(**feed)
        np.testing.assert_array_equal(result.outputs["y"], y)
        np.testing.assert_array_equal(result.outputs["p"], p)
        assert (y != 0).any() and (np.abs(y) == 127).any()  # not a vacuous comparison
    gemm_macs = sum(w.macs_executed for w in result.work)
    assert gemm_macs == 8 * 32 * 48


def test_fixture_through_the_command_line_tools(tmp_path: Path) -> None:
    esb = tmp_path / "linear.esb"
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "esact-as", FIXTURE, "-o", esb], check=True)
    listing = subprocess.run([bin_dir / "esact-objdump", "-d", esb], check=True,
                             capture_output=True, text=True).stdout
    assert "gemm pop=load" in listing
    (tmp_path / "re.s").write_text(listing)
    subprocess.run([bin_dir / "esact-as", tmp_path / "re.s", "-o", tmp_path / "re.esb"],
                   check=True)
    assert (tmp_path / "re.esb").read_bytes() == esb.read_bytes()
    config = load_config()
    feed = inputs(9)
    result = execute(read_esb(esb), feed, config)
    np.testing.assert_array_equal(result.outputs["y"], reference(**feed)[0])
