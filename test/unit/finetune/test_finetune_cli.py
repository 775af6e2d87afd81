"""esact-finetune as a user runs it: a fine-tuned ONNX that esact-cc compiles like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hostile_run import run_tool
from onnx import numpy_helper

pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "models"


def test_finetune_then_compile_with_spls(tmp_path):
    images = np.load(FIXTURES / "vit_tiny_dynamo18.inputs.npz")["pixel_values"]
    rng = np.random.default_rng(0)
    data = (images + rng.normal(0, 0.5, (4, *images.shape[1:]))).astype(np.float32)
    np.savez(tmp_path / "data.npz", pixel_values=data)
    result = run_tool("esact-finetune", FIXTURES / "vit_tiny_dynamo18.onnx", "--data",
                      "data.npz", "-o", "tuned.onnx", "--epochs", "2", "--batch", "4",
                      "--distill", "cosine", "--scored-output", "last_hidden_state",
                      "--sparsity-option", "threshold=0.5", "--sparsity-option",
                      "1:threshold=0.3", cwd=tmp_path, time_limit=900)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stderr and "-> tuned.onnx" in result.stderr
    tuned = onnx.load(str(tmp_path / "tuned.onnx"))
    original = onnx.load(str(FIXTURES / "vit_tiny_dynamo18.onnx"))
    changed = [t.name for t, o in zip(tuned.graph.initializer, original.graph.initializer)
               if not np.array_equal(numpy_helper.to_array(t), numpy_helper.to_array(o))]
    assert len(changed) > 10
    assert not [n for n in changed if "embeddings" in n or "pooler" in n
                or n.startswith("model.layernorm")], changed  # outside the layers: kept
    compiled = run_tool("esact-cc", "tuned.onnx", "--sparsity", "spls", "--calibration-data",
                        "data.npz", "-o", "tuned.esb", cwd=tmp_path, time_limit=900)
    assert compiled.returncode == 0, compiled.stderr
    assert (tmp_path / "tuned.esb").stat().st_size > 0
