"""Verification once per stage by default, after every pass with --verify-each."""

from pathlib import Path

import pytest
from xdsl.dialects.builtin import ModuleOp

from esact_cc.cli.esact_cc_main import build_parser, compile_options
from esact_cc.pipeline import CompileOptions, compile_model, stage_named, stage_names

FIXTURE = Path(__file__).parents[2] / "fixtures" / "models" / "bert_tiny_legacy17.onnx"


def count_verifies(monkeypatch: pytest.MonkeyPatch, options: CompileOptions) -> int:
    calls = []
    original = ModuleOp.verify
    monkeypatch.setattr(ModuleOp, "verify", lambda self: calls.append(1) or original(self))
    compile_model(FIXTURE, "quantized", options)
    return len(calls)


def passes_up_to(stage: str, options: CompileOptions) -> list[int]:
    """The number of passes of each stage up to `stage`."""
    last = stage_names().index(stage)
    return [len(stage_named(name).passes(options)) for name in stage_names()[: last + 1]]


def test_default_verifies_once_per_stage_with_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    options = CompileOptions()
    counts = passes_up_to("quantized", options)
    assert sum(counts) > sum(1 for c in counts if c)  # some stage has several passes
    assert count_verifies(monkeypatch, options) == sum(1 for c in counts if c)


def test_verify_each_verifies_after_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    options = CompileOptions(verify_each=True)
    assert count_verifies(monkeypatch, options) == sum(passes_up_to("quantized", options))


def test_cli_flag_reaches_the_options() -> None:
    for argv, expected in (([str(FIXTURE)], False), ([str(FIXTURE), "--verify-each"], True)):
        args = build_parser().parse_args(argv)
        assert compile_options(args, "esb", {}).verify_each is expected
