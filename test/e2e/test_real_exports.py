"""Real exporter output: the committed fixtures and the bundled digits ViT stay what they claim.

- Each tiny fixture (test/fixtures/models, written by scripts/generate_models.py --tiny) is
  small, its stored inputs match the graph's inputs, and onnxruntime still reproduces its stored
  reference outputs (so a fixture or an onnxruntime upgrade cannot silently drift).
- The bundled default model (esact_cc/models/digits_vit.onnx, scripts/train_digits_vit.py) lifts
  completely (4 attention blocks, no MatMul/Gemm/Softmax/LayerNormalization/GELU piece left),
  the interpreter on the lifted IR matches onnxruntime on held-out images, and its metadata
  (input, accuracy) agrees with onnxruntime on the shipped test split.

The lift + interpreter check on the six fixtures themselves is test_lift_fixture_models.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from esact_cc.dialects.transformer import AttentionOp, HostOp
from esact_cc.passes.lift_transformer import lift_module

from esact_cc.frontend.onnx_frontend import import_onnx
from esact_cc.interpreter.reference_interpreter import run_module

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "test" / "fixtures" / "models"
BUNDLED = REPO / "esact_cc" / "models"
FIXTURE_NAMES = sorted(
    n for n in json.loads((FIXTURES / "models.json").read_text()) if not n.startswith("_")
)
CORE_ONNX_OPS = {"onnx.MatMul", "onnx.Gemm", "onnx.Softmax", "onnx.LayerNormalization",
                 "onnx.ReduceMean", "onnx.Pow", "onnx.Sqrt", "onnx.Erf", "onnx.Gelu"}
DIGITS_LAYERS = 4
DIGITS_IMAGES_CHECKED = 40


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_fixture_sizes_within_budget() -> None:
    files = [p for p in FIXTURES.iterdir() if p.is_file()]
    assert all(p.stat().st_size < 1 << 20 for p in files), [
        (p.name, p.stat().st_size) for p in files if p.stat().st_size >= 1 << 20]
    assert sum(p.stat().st_size for p in files) < 4 << 20
    assert len(FIXTURE_NAMES) == 6


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_reference_outputs_reproduce(name: str) -> None:
    path = FIXTURES / f"{name}.onnx"
    record = json.loads((FIXTURES / "models.json").read_text())[name]
    proto = onnx.load(str(path))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == record["opset"] == int(name[-2:])
    inputs = dict(np.load(FIXTURES / f"{name}.inputs.npz"))
    graph_inputs = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
                    for i in proto.graph.input}
    assert {k: list(v.shape) for k, v in inputs.items()} == graph_inputs
    expected = dict(np.load(FIXTURES / f"{name}.ref.npz"))
    got = dict(zip([o.name for o in proto.graph.output], session(path).run(None, inputs)))
    assert set(got) == set(expected)
    for output, want in expected.items():
        assert np.isfinite(want).all()
        assert float(np.max(np.abs(want))) > 0.0
        err = float(np.max(np.abs(got[output] - want)))
        assert err <= 1e-5 * float(np.max(np.abs(want))), f"{output}: {err}"


@pytest.fixture(scope="module")
def digits_meta() -> dict:
    return json.loads((BUNDLED / "digits_vit.json").read_text())


def test_bundled_digits_files_and_metadata(digits_meta: dict) -> None:
    files = ["digits_vit.onnx", "digits_test.npz", "digits_calib.npz", "digits_vit.json"]
    assert sum((BUNDLED / f).stat().st_size for f in files) < 1 << 20
    proto = onnx.load(str(BUNDLED / "digits_vit.onnx"))
    (graph_input,) = proto.graph.input
    (meta_input,) = digits_meta["inputs"]
    assert graph_input.name == meta_input["name"]
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == meta_input["shape"]
    for split in ("digits_test.npz", "digits_calib.npz"):
        data = np.load(BUNDLED / split)
        assert data["images"].dtype == np.float32 and data["images"].shape[1:] == (1, 8, 8)
        assert 0.0 <= data["images"].min() and data["images"].max() <= 1.0
        assert set(np.unique(data["labels"])) == set(range(10))
    assert len(np.load(BUNDLED / "digits_calib.npz")["labels"]) == digits_meta["splits"]["calib"]


def test_bundled_digits_accuracy_matches_metadata(digits_meta: dict) -> None:
    data = np.load(BUNDLED / "digits_test.npz")
    sess = session(BUNDLED / "digits_vit.onnx")
    name = digits_meta["inputs"][0]["name"]
    preds = np.array([int(np.argmax(sess.run(None, {name: x[None]})[0])) for x in data["images"]])
    accuracy = float(np.mean(preds == data["labels"]))
    assert round(accuracy, 4) == digits_meta["test_accuracy_onnxruntime"]
    assert accuracy >= 0.95


def test_bundled_digits_lifts_completely_and_matches_onnxruntime(digits_meta: dict) -> None:
    path = BUNDLED / "digits_vit.onnx"
    module, store = import_onnx(path)
    report = lift_module(module, store)
    module.verify()
    assert not report.near_misses, report.near_misses
    ops = Counter(op.name for op in module.walk())
    assert not CORE_ONNX_OPS & set(ops), {n: ops[n] for n in CORE_ONNX_OPS & set(ops)}
    attention = [op for op in module.walk() if isinstance(op, AttentionOp)]
    assert len(attention) == DIGITS_LAYERS and all(op.causal is None for op in attention)
    # pre-LN: 2 per block + final; erf GELU once per block; 2 residual adds per block
    assert ops["transformer.layer_norm"] == 2 * DIGITS_LAYERS + 1
    assert ops["transformer.gelu"] == DIGITS_LAYERS
    assert ops["transformer.add"] == 2 * DIGITS_LAYERS
    assert all(
        not op.name.startswith("transformer.") or op.name == "transformer.yield" or op is host
        for host in module.walk() if isinstance(host, HostOp) for op in host.body.walk()
    )

    name = digits_meta["inputs"][0]["name"]
    images = np.load(BUNDLED / "digits_test.npz")["images"][:DIGITS_IMAGES_CHECKED]
    sess = session(path)
    for x in images:
        want = sess.run(None, {name: x[None]})[0]
        got = run_module(module, {name: x[None]}, store)["logits"]
        assert float(np.max(np.abs(got - want))) <= 1e-4 * float(np.max(np.abs(want)))
        assert int(np.argmax(got)) == int(np.argmax(want))
