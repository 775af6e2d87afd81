"""lift-transformer on the real-exporter fixtures (test/fixtures/models: BERT legacy-17 and
dynamo-18, ViT dynamo-18, GPT-2 dynamo-18, MiniLM legacy-14 with decomposed layer norm and
dynamo-20 with the Gelu op): every Transformer block is lifted completely (no MatMul, Gemm,
Softmax, LayerNormalization or layer-norm decomposition left anywhere, not even in host
regions), no candidate is a near miss, and the interpreter's outputs on the lifted IR match the
onnxruntime reference outputs stored with each fixture."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from esact_cc.dialects.transformer import AttentionOp, HostOp
from esact_cc.passes.lift_transformer import lift_module

from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import run_module

FIXTURES = Path(__file__).parents[1] / "fixtures" / "models"
MODELS = sorted(
    name for name in json.loads((FIXTURES / "models.json").read_text()) if not name.startswith("_")
)
LAYERS = 2
# Ops that belong inside transformer ops: none of them may survive the lift.
CORE_ONNX_OPS = {
    "onnx.MatMul",
    "onnx.Gemm",
    "onnx.Softmax",
    "onnx.LayerNormalization",
    "onnx.ReduceMean",
    "onnx.Sqrt",
    "onnx.Pow",
    "onnx.Erf",
    "onnx.Gelu",
}


@pytest.mark.parametrize("name", MODELS)
def test_fixture_lifts_completely_and_matches_onnxruntime(name: str) -> None:
    module, store = import_onnx(FIXTURES / f"{name}.onnx")
    report = lift_module(module, store)
    module.verify()
    assert not report.near_misses, report.near_misses
    ops = Counter(op.name for op in module.walk())
    assert not CORE_ONNX_OPS & set(ops), {n: ops[n] for n in CORE_ONNX_OPS & set(ops)}
    assert ops["transformer.attention"] == LAYERS
    assert (
        ops["transformer.layer_norm"] == 2 * LAYERS + 1
    )  # + embeddings (BERT) / final (GPT-2, ViT)
    assert ops["transformer.gelu"] == LAYERS
    assert ops["transformer.add"] == 2 * LAYERS
    assert ops["transformer.linear"] >= 6 * LAYERS
    causal = [op.causal is not None for op in module.walk() if isinstance(op, AttentionOp)]
    assert causal == [name.startswith("gpt2")] * LAYERS
    # Host regions only hold the embeddings, mask preprocessing, pooling / heads.
    for host in (op for op in module.walk() if isinstance(op, HostOp)):
        assert not [
            op
            for op in host.body.walk()
            if op.name.startswith("transformer.")
            and op is not host
            and op.name != "transformer.yield"
        ]

    inputs = dict(np.load(FIXTURES / f"{name}.inputs.npz"))
    expected = dict(np.load(FIXTURES / f"{name}.ref.npz"))
    got = run_module(module, inputs, store)
    for output, want in expected.items():
        error = float(np.max(np.abs(got[output] - want)))
        assert error <= 1e-4 * float(np.max(np.abs(want))), f"{output}: max abs error {error}"


def test_esact_cc_debug_lift_reports_near_misses(tmp_path: Path) -> None:
    """`esact-cc --debug-lift` forwards to lift-transformer{debug=true}: near misses on stderr."""
    import onnx
    from onnx import TensorProto, helper

    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 4, 4])
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["scores"], ["p"], name="/head/Softmax", axis=1)],
        "g",
        [scores],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "near_miss.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = subprocess.run(
        ["esact-cc", str(path), "--compile-to", "transformer", "--debug-lift"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "near miss: softmax at '/head/Softmax': Softmax axis 1 is not the last axis"
        in result.stderr
    )
    assert "transformer.host" in result.stdout and "transformer.softmax" not in result.stdout
