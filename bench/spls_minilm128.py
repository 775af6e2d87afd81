"""all-MiniLM-L6-v2 at 128 tokens, dense against SPLS: bench/scheme_comparison.py's comparison
(esact-tune's search on calibration sentences under mean cosine >= 0.99 to the FP32 model, the
chosen setting's cosine on held-out sentences, cycles and on-chip / system energy of the
compiled program on the hardware model) with the sentences padded to 128 tokens instead of
scheme_comparison_models.MINILM_TOKENS (64); then bench/spls_minilm128_layers.py on the chosen
setting: dense and SPLS on every reporting sentence on the hardware model, layer by layer
(cycles, on-chip energy, the prediction's share, rows reused), written beside it as
spls_minilm128_layers.json. Arguments are scheme_comparison.py's.

    HF_HUB_OFFLINE=1 python bench/spls_minilm128.py --search quick --no-curves \
        --out-dir bench/results/spls_minilm128
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import scheme_comparison
import scheme_comparison_models
import spls_minilm128_layers

TOKENS = 128


def main(argv: list[str]) -> int:
    scheme_comparison_models.MINILM_TOKENS = TOKENS
    fixed = ["--models", "minilm", "--schemes", "dense,spls"]
    status = scheme_comparison.main([*fixed, *argv])
    out_dir = Path(argv[argv.index("--out-dir") + 1]) if "--out-dir" in argv else \
        scheme_comparison.RESULTS
    path = out_dir / "scheme_comparison_minilm.json"
    result = json.loads(path.read_text())  # the command that reproduces it is this script's
    result["command"] = " ".join(["python bench/spls_minilm128.py", *argv])
    path.write_text(json.dumps(result, indent=1) + "\n")
    status = status or scheme_comparison.main([*fixed, "--markdown", *argv])
    return status or spls_minilm128_layers.main(
        ["--tuned", str(path), "--json", str(out_dir / "spls_minilm128_layers.json")])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
