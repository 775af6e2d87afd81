"""Re-timing a recorded run on another config: equal to a fresh compile and run there when
only timing parameters change; refused, naming the parameter, when the program would change;
and the compiler reads no hardware parameter that PROGRAM_PARAMETERS does not list."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from esact_cc import api
from esact_cc.bundled_model import load_bundled_model
from esact_cc.runtime.errors import ConfigError, ProgramError
from esact_cc.runtime.hw_config import HardwareConfig, load_config, resolve_config
from esact_cc.runtime.retiming import PROGRAM_PARAMETERS, retime
from esact_cc.runtime.run_program import program_digest, run_program

MODEL = load_bundled_model()
IMAGE = {MODEL.input_name: MODEL.test_images[3:4]}
# Only timing and energy parameters: clock, DRAM bandwidth and latency, unit lanes, tokens.
TIMING_CHANGE = {"name": "retimed", "clock": {"frequency_hz": 7.0e8},
                 "dram": {"bandwidth_bytes_per_s": 8.0e9, "latency_cycles": 250},
                 "sfu": {"lanes": 16}, "tokens": {"latency_cycles": 3}}


def compile_for(config: HardwareConfig, tmp_path, sparsity: str):
    path = tmp_path / f"{config.hash[:12]}.toml"
    path.write_text(config.to_toml())
    extra = {"sparsity": sparsity} if sparsity != "dense" else {}
    return api.compile(MODEL.onnx_path, stage="esb", hw=str(path), **extra).program()


def without_meta(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "meta"}


@pytest.mark.parametrize("sparsity", ["dense", "spls"])
def test_retiming_equals_a_fresh_run_on_a_timing_only_change(tmp_path, sparsity: str) -> None:
    base, changed = load_config(), HardwareConfig.from_dict(TIMING_CHANGE)
    recorded = run_program(compile_for(base, tmp_path, sparsity), IMAGE, base)
    fresh = run_program(compile_for(changed, tmp_path, sparsity), IMAGE, changed)
    retimed = retime(recorded, changed)
    assert recorded.report["total"]["cycles"] != fresh.report["total"]["cycles"]
    assert without_meta(retimed.report) == without_meta(fresh.report)
    assert retimed.schedule.start == fresh.schedule.start
    for name, value in fresh.outputs.items():
        np.testing.assert_array_equal(retimed.outputs[name], value)
    assert retimed.report["meta"]["retimed_from_config_hash"] == base.hash


@pytest.mark.parametrize("table, key", [
    ({"mac_array": {"rows": 16}}, "mac_array.rows"),
    ({"bpu": {"lanes": 128}}, "bpu.lanes"),
    ({"topk": {"lanes": 8}}, "topk.lanes"),
    ({"sram": {"weight_buffer": 1 << 19}}, "sram.weight_buffer"),
])
def test_a_program_parameter_change_is_refused_naming_it(tmp_path, table, key) -> None:
    base = load_config()
    recorded = run_program(compile_for(base, tmp_path, "dense"), IMAGE, base)
    with pytest.raises(ConfigError, match=f"'{key}' is .* compiled for"):
        retime(recorded, HardwareConfig.from_dict(table))


def test_a_dram_too_small_for_the_program_is_the_fresh_run_error(tmp_path) -> None:
    base = load_config()
    recorded = run_program(compile_for(base, tmp_path, "dense"), IMAGE, base)
    small = HardwareConfig.from_dict({"dram": {"capacity_bytes": 1024}})
    with pytest.raises(ProgramError, match="exceeds DRAM size 1024") as fresh:
        run_program(recorded.program, IMAGE, small, force_config=True)
    with pytest.raises(ProgramError) as retimed:
        retime(recorded, small)
    assert str(retimed.value) == str(fresh.value)


def test_the_compiler_reads_only_program_parameters(monkeypatch) -> None:
    """Every hardware attribute the compiler reads, recorded through a proxy config: a new
    read of another parameter would make re-timing silently wrong, so it fails here."""
    reads: set[str] = set()

    class RecordingConfig:
        def __init__(self, config: HardwareConfig) -> None:
            object.__setattr__(self, "_config", config)

        def __getattr__(self, name: str):
            reads.add(name)
            return getattr(self._config, name)

    api.compile(MODEL.onnx_path, stage="esb")  # imports every pass module
    patched = [module for name, module in list(sys.modules.items())
               if name.startswith(("esact_cc.passes", "esact_cc.backend"))
               and hasattr(module, "resolve_config")]
    assert patched
    for module in patched:
        monkeypatch.setattr(module, "resolve_config",
                            lambda spec: RecordingConfig(resolve_config(spec)))
    for sparsity in ("dense", "spls"):
        api.compile(MODEL.onnx_path, stage="esb", sparsity=sparsity)
    assert {"mac_rows", "bpu_lanes", "weight_buffer_bytes"} <= reads
    assert reads - {"hash", "name"} <= set(PROGRAM_PARAMETERS)


def test_a_program_parameter_that_leaves_the_program_unchanged(tmp_path) -> None:
    """BPU lanes do not change the digits ViT's SPLS program: given the digest of the program
    compiled for the new config, re-timing equals the fresh run there; without it, refused."""
    base, changed = load_config(), HardwareConfig.from_dict({"bpu": {"lanes": 128}})
    recorded = run_program(compile_for(base, tmp_path, "spls"), IMAGE, base)
    program = compile_for(changed, tmp_path, "spls")
    assert program_digest(program) == recorded.program_digest()
    fresh = run_program(program, IMAGE, changed)
    retimed = retime(recorded, changed, program_for_config=program_digest(program))
    assert without_meta(retimed.report) == without_meta(fresh.report)
    with pytest.raises(ConfigError, match="'bpu.lanes' is 128"):
        retime(recorded, changed)
    other = compile_for(HardwareConfig.from_dict({"mac_array": {"rows": 16}}), tmp_path, "spls")
    with pytest.raises(ConfigError, match="'bpu.lanes' is 128"):  # a digest of another program
        retime(recorded, changed, program_for_config=program_digest(other))
