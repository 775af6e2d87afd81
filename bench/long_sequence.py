"""BERT-base (random weights, hidden 768, 12 heads) and a LLaMA-style decoder (hidden 768, 12
query heads over 4 key/value heads, RMSNorm, SwiGLU, rotary, causal) at long sequences on the
DEFAULT hardware, dense and with every attention-sparsity scheme: does it compile, what does it
cost.

Per sequence length and setting: compile ONNX -> ESACT program (legacy TorchScript export,
`--layers` encoder layers, bench/attention_tiling.py's model), run it on the hardware model,
run the same IR on the reference interpreter, and record: cycles, roofline cycles and their
ratio, DRAM bytes, on-chip and system energy, the reused-row fraction, the largest difference to the
interpreter (encoder binaries differ from it by FP32 rounding of LayerNorm / GELU, as the dense
binary does: `dense_max_abs_diff` is the same measure for the dense program) and, with
`--check-whole` at lengths whose masks fit a large-buffer config, whether the binary equals the
whole-row program (SPA, PAM and masks all on chip) bit for bit. A setting that does not compile
is recorded with its error. `spls-no-reuse` (threshold 1.01: no row is ever reused) states
what the prediction costs over dense when it saves nothing; `spls-topk-no-reuse` (4-bit HLog,
top-k attention on 10% of the keys, no reuse: passes/spls_no_reuse.py keeps only the
prediction the attention reads) what the top-k attention alone saves. `cosine_to_dense` is the
cosine of the output to the dense binary's (random weights have no task accuracy).

    python bench/long_sequence.py [--model bert|llama] [--lengths 128 512] [--layers 1]
        [--check-whole] [--json bench/results/long_sequence.json]
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
from attention_tiling import export_bert, export_last_hidden
from esact_cc.runtime.errors import EsactError
from esact_cc.runtime.isa import Buffer

from esact_cc import api

SETTINGS: dict[str, tuple[str | None, list[str]]] = {
    "dense": (None, []),
    "spls": ("spls", []),
    "spls-design": ("spls", ["hlog-bits=4", "k-ratio=0.2", "window=4", "threshold=0.9",
                             "similarity=cosprob"]),
    "spls-no-reuse": ("spls", ["threshold=1.01"]),
    "spls-no-reuse-dense-prefix": ("spls", ["threshold=1.01", "dense-prefix=attention"]),
    "spls-design-dense-prefix": ("spls", ["hlog-bits=4", "k-ratio=0.2", "window=4",
                                          "threshold=0.9", "similarity=cosprob",
                                          "dense-prefix=attention"]),
    "spls-topk-attention": ("spls", ["attention=topk"]),
    "spls-topk-no-reuse": ("spls", ["attention=topk", "hlog-bits=4", "k-ratio=0.1",
                                    "threshold=1.01"]),
    "sanger": ("sanger", []),
    "spatten": ("spatten", []),
}
WHOLE_ROW_TOML = """name = "whole-row-masks"
[sram]
mask_buffer = 1048576
vector_buffer = 4194304
"""
"""Buffers large enough for BERT-base's masks at 128 tokens (the whole-row form)."""


def export_llama(length: int, layers: int, path: Path) -> dict[str, np.ndarray]:
    """A LLaMA-style decoder with random weights (transformers' LlamaConfig: grouped-query
    attention 12 / 4 heads, RMSNorm, SwiGLU FFN, rotary embeddings), legacy export, opset 17."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(hidden_size=768, num_attention_heads=12, num_key_value_heads=4,
                         intermediate_size=2048, num_hidden_layers=layers, vocab_size=1024,
                         max_position_embeddings=max(2048, length), use_cache=False,
                         attn_implementation="eager")
    torch.manual_seed(0)
    return export_last_hidden(LlamaModel(config), config.vocab_size, length, path)


EXPORTERS = {"bert": export_bert, "llama": export_llama}


def options(setting: str, hw: str | None = None) -> dict[str, object]:
    scheme, extra = SETTINGS[setting]
    found: dict[str, object] = {} if scheme is None else {"sparsity": scheme,
                                                         "sparsity_option": extra}
    return found | ({"hw": hw} if hw else {})


def measure(path: Path, inputs: dict[str, np.ndarray], setting: str,
            whole_hw: str | None, dense: np.ndarray | None = None) -> dict[str, object]:
    row: dict[str, object] = {"setting": setting}
    start = time.perf_counter()
    try:
        compiled = api.compile(str(path), stage="esact", **options(setting))
    except EsactError as exc:
        return row | {"compiles": False, "error": str(exc)}
    row["compile_s"] = round(time.perf_counter() - start, 1)
    program = compiled.program()
    sims = [i for i in program.instructions if i.opcode_name == "similarity"]
    row["spls_ring_form"] = bool(sims) and all(i.fields["has_ring"] for i in sims)
    row["mbuf_spill_stores"] = sum(1 for i in program.instructions
                                   if i.opcode_name == "store" and i.fields["buf"] == Buffer.MBUF)
    result = compiled.simulate(inputs)
    report = result.report
    energy = report["energy"]
    row |= {"compiles": True, "cycles": report["total"]["cycles"],
            "roofline_cycles": report["roofline_cycles"],
            "roofline_ratio": round(report["total"]["cycles"] / report["roofline_cycles"], 3),
            "bound_by": report["roofline"]["bound_by"],
            "dram_bytes": report["total"]["dram_bytes"],
            "energy_on_chip_uj": round(energy["on_chip"]["energy_pj"] / 1e6, 1),
            "energy_system_uj": round(energy["system"]["energy_pj"] / 1e6, 1),
            "macs_executed": report["total"]["macs_executed"],
            "reused_row_fraction": report.get("spls", {}).get("reused_row_fraction")}
    got = result.outputs["last_hidden_state"]
    expected = api.compile(str(path), stage="sparsity", **options(setting)).run(inputs)
    row["max_abs_diff"] = float(np.abs(got - expected["last_hidden_state"]).max())
    row["output"] = got  # popped by main: the dense output, for cosine_to_dense
    if dense is not None:
        a, b = got.astype(np.float64).ravel(), dense.astype(np.float64).ravel()
        row["cosine_to_dense"] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    if whole_hw is not None and setting != "dense":
        whole = api.compile(str(path), stage="esact", **options(setting, whole_hw))
        same = whole.simulate(inputs, hw=whole_hw).outputs["last_hidden_state"]
        row["equals_whole_row_binary"] = bool(np.array_equal(got, same))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(EXPORTERS), default="bert")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--check-whole", action="store_true",
                        help="compare with the whole-row binary where the masks fit 1 MiB MBUF")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        whole_hw = Path(tmp) / "whole.toml"
        whole_hw.write_text(WHOLE_ROW_TOML)
        for length in args.lengths:
            path = Path(tmp) / f"{args.model}_{length}.onnx"
            inputs = EXPORTERS[args.model](length, args.layers, path)
            dense_cycles, dense_output, dense_uj = None, None, None
            for setting in args.settings:
                check = str(whole_hw) if args.check_whole and 12 * length * length <= 1 << 20 \
                    else None
                row = {"model": args.model, "length": length,
                       "layers": args.layers} | measure(path, inputs, setting,
                                                        check, dense_output)
                output = row.pop("output", None)
                if setting == "dense":
                    dense_cycles, dense_output = row.get("cycles"), output
                    dense_uj = row.get("energy_on_chip_uj")
                elif dense_cycles and row.get("cycles"):
                    row["cycles_over_dense"] = round(row["cycles"] / dense_cycles, 3)
                    row["on_chip_energy_over_dense"] = round(row["energy_on_chip_uj"] / dense_uj, 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        command = "python bench/long_sequence.py " + " ".join(
            [f"--model {args.model}", f"--lengths {' '.join(map(str, args.lengths))}",
             f"--layers {args.layers}", f"--settings {' '.join(args.settings)}"]
            + (["--check-whole"] if args.check_whole else []))
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
