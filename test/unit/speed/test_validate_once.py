"""A compile to a binary validates each instruction once (when it is serialized, before
anything is written), and a malformed instruction is still rejected with its message."""

import re
from pathlib import Path

import pytest
from esact_cc.dialects import esact
from esact_cc.passes import schedule
from esact_cc.runtime import esb
from esact_cc.runtime.esb import read_esb

from esact_cc.bundled_model import MODELS_DIR
from esact_cc.cli.esact_cc_main import main

MODEL = str(MODELS_DIR / "digits_vit.onnx")


def count_validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    for module in (esact, esb):
        original = module.validate_instruction
        monkeypatch.setattr(module, "validate_instruction",
                            lambda instr, index, original=original: calls.append(index)
                            or original(instr, index))
    return calls


def test_each_instruction_validated_once(monkeypatch, tmp_path: Path) -> None:
    calls = count_validations(monkeypatch)
    assert main([MODEL, "-o", str(tmp_path / "m.esb"), "--no-cache"]) == 0
    assert len(calls) == len(read_esb(tmp_path / "m.esb").instructions) > 0
    calls.clear()  # IR output: verification is the only check, and it still runs
    assert main([MODEL, "--compile-to", "esact", "-o", str(tmp_path / "m.mlir"),
                 "--no-cache"]) == 0
    assert calls


@pytest.fixture
def malformed_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler bug: scheduling leaves the first LOAD with 0 rows."""
    original = schedule.schedule_module

    def schedule_then_break(module) -> None:  # type: ignore[no-untyped-def]
        original(module)
        next(op for op in module.body.block.ops if op.name == "esact.load").set_field("rows", 0)

    monkeypatch.setattr(schedule, "schedule_module", schedule_then_break)


def test_malformed_instruction_rejected_before_writing(malformed_load, capsys,
                                                       tmp_path: Path) -> None:
    # A binary: serialization names the instruction and its field.
    assert main([MODEL, "-o", str(tmp_path / "m.esb"), "--no-cache"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"esact-cc: error: instruction \d+ \(load\): field 'rows' = 0 "
                        r"outside \[1, \d+\]", error), error
    assert not (tmp_path / "m.esb").exists()
    # IR: the esact stage's verification finds it (a compiler bug: an internal error).
    assert main([MODEL, "-o", str(tmp_path / "m.mlir"), "--no-cache"]) == 70
    assert "esact.load: field 'rows' = 0 outside [1, " in capsys.readouterr().err
    assert not (tmp_path / "m.mlir").exists()
