"""all-MiniLM-L6-v2 (trained, 6 layers) at 128 tokens: what SPLS's prediction costs with no
row reused (threshold 1.01, the setting esact-tune's uniform search keeps for it:
bench/results/spls_critical_path.md; its per-layer search now turns such layers' prediction
off, docs/design.md 6.3), with and without `dense-prefix=attention`, against dense: cycles
and on-chip / system energy of one doc sentence padded to 128 tokens, INT8 ranges from the first 8
sentences (bench/scheme_comparison_models.minilm_sentence_samples); the two SPLS binaries'
sentence embeddings must be equal.

    HF_HUB_OFFLINE=1 python bench/spls_minilm128_prefix.py [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import scheme_comparison_models as models

from esact_cc import api

TOKENS = 128
SETTINGS = {"dense": {}, "spls threshold=1.01": ["threshold=1.01"],
            "spls threshold=1.01 dense-prefix=attention": ["threshold=1.01",
                                                           "dense-prefix=attention"]}


def main() -> None:
    from generate_models import SentenceEmbedding, minilm_trained

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = models.minilm_sentence_samples(TOKENS)
    rows, embeddings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path, calib = Path(tmp) / "minilm128.onnx", Path(tmp) / "calib.npz"
        models._export(SentenceEmbedding(minilm_trained()), samples[0],
                       ["last_hidden_state", "sentence_embedding"], path, 14)
        np.savez(calib, **{k: np.concatenate([s[k] for s in samples[:8]]) for k in samples[0]})
        for name, options in SETTINGS.items():
            scheme = {"sparsity": "spls", "sparsity_option": options} if options else {}
            result = api.compile(str(path), stage="esact", calibration_data=str(calib),
                                 **scheme).simulate(samples[8])
            energy = result.report["energy"]
            row = {"setting": name, "cycles": result.report["total"]["cycles"],
                   "energy_on_chip_uj": round(energy["on_chip"]["energy_pj"] / 1e6, 1),
                   "energy_system_uj": round(energy["system"]["energy_pj"] / 1e6, 1)}
            rows.append(row)
            embeddings.append(result.outputs["sentence_embedding"])
            print(json.dumps(row), flush=True)
    equal = bool(np.array_equal(embeddings[1], embeddings[2]))
    print(f"dense-prefix embedding equals the SPLS one: {equal}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": f"HF_HUB_OFFLINE=1 python bench/spls_minilm128_prefix.py --json {args.json}",
            "rows": rows, "prefix_embedding_equal": equal}, indent=1) + "\n")


if __name__ == "__main__":
    main()
