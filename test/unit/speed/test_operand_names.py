"""operands_by_name reads which optional operands are present from the segment sizes (or the
operand count) once; it names the fields xdsl's per-field accessors say are present."""

from __future__ import annotations

from pathlib import Path

import pytest

from esact_cc import api
from esact_cc.interpreter.reference_interpreter import operands_by_name

MODELS = Path(__file__).resolve().parents[2] / "fixtures" / "models"


def _by_accessors(op) -> list[str] | str:
    names = [name for name, _ in type(op).get_irdl_definition().operands
             if getattr(op, name) is not None]
    return names if len(names) == len(op.operands) else "mismatch"


def _fast(op) -> list[str] | str:
    try:
        return list(operands_by_name(op, list(op.operands)))
    except ValueError:
        return "mismatch"


@pytest.mark.parametrize("stage, options", [("transformer", {}), ("quantized", {}),
                                            ("sparsity", {"sparsity": "spls"})])
def test_operand_names_match_the_accessors(stage: str, options: dict) -> None:
    module = api.compile(MODELS / "bert_tiny_dynamo18.onnx", stage, **options).module
    checked = {op.name for op in module.walk() if op.name.split(".")[0] in ("transformer", "spls")
               and _fast(op) == _by_accessors(op)}
    mismatched = [op.name for op in module.walk() if op.name.split(".")[0] in ("transformer", "spls")
                  and _fast(op) != _by_accessors(op)]
    assert not mismatched
    assert "transformer.linear" in checked and "transformer.attention" in checked
    if stage == "sparsity":
        assert "spls.predict_attention" in checked  # one optional operand, no segment sizes
