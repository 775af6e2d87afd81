"""Dense BERT-base (random weights, hidden 768, 12 heads) at long sequences: does it compile on
the default hardware, what does the attention's query tiling cost, and is the binary the INT8
interpreter's result bit for bit.

Per sequence length: compile ONNX -> .esb (legacy TorchScript export, opset 17, `--layers`
encoder layers), run the binary on the hardware model, run the quantized IR on the reference
interpreter, and print the attention's query tile (rows of the first ATTN_QK), the simulated
cycles, the MAC-array work (executed vs useful MACs: query tiling recomputes nothing, so the
ratio states that rather than assuming it), and whether the outputs are identical.

    python bench/attention_tiling.py [--lengths 128 512 2048] [--layers 1] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_dense_models.py

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

from esact_cc import api
from esact_cc.runtime.errors import EsactError


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_bert(length: int, layers: int, path: Path) -> dict[str, np.ndarray]:
    config = BertConfig(num_hidden_layers=layers, max_position_embeddings=max(512, length),
                        attn_implementation="eager")
    torch.manual_seed(0)
    return export_last_hidden(BertModel(config, add_pooling_layer=False), config.vocab_size,
                              length, path)


def export_last_hidden(model: torch.nn.Module, vocab: int, length: int,
                       path: Path) -> dict[str, np.ndarray]:
    """Legacy export (opset 17) of a text model's last_hidden_state on random ids (seed 0),
    all tokens attended; returns the inputs."""
    model = model.eval()
    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(1, vocab, (1, length), dtype=np.int64),
              "attention_mask": np.ones((1, length), np.int64)}
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    torch.onnx.export(LastHidden(model), args, str(path), dynamo=False, opset_version=17,
                      input_names=list(inputs), output_names=["last_hidden_state"])
    return inputs


def measure(length: int, layers: int, workdir: Path) -> dict[str, object]:
    path = workdir / f"bert_{length}.onnx"
    inputs = export_bert(length, layers, path)
    row: dict[str, object] = {"length": length, "layers": layers}
    start = time.perf_counter()
    try:
        compiled = api.compile(str(path), stage="esact")
    except EsactError as exc:
        return row | {"compiles": False, "error": str(exc)}
    row["compile_s"] = round(time.perf_counter() - start, 1)
    program = compiled.program()
    qk = [i for i in program.instructions if i.opcode_name == "attn_qk"]
    row["query_tile_rows"] = qk[0].fields["lq"] if qk else None
    row["attn_qk_instructions"] = len(qk)
    start = time.perf_counter()
    result = compiled.simulate(inputs)
    row["simulate_s"] = round(time.perf_counter() - start, 1)
    total = result.report["total"]
    row |= {"compiles": True, "cycles": total["cycles"], "macs_useful": total["macs_dense"],
            "macs_executed": total["macs_executed"],
            "executed_per_useful": total["macs_executed"] / total["macs_dense"]}
    expected = api.compile(str(path), stage="sparsity").run(inputs)["last_hidden_state"]
    got = result.outputs["last_hidden_state"]
    row["bit_exact"] = bool(np.array_equal(got, expected))
    row["max_abs_diff"] = float(np.abs(got - expected).max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            rows.append(measure(length, args.layers, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
