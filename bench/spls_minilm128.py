"""all-MiniLM-L6-v2 at 128 tokens, dense against SPLS: bench/scheme_comparison.py's comparison
(esact-tune's search on calibration inputs under mean cosine >= 0.99 to the FP32 model, the
chosen setting's cosine on held-out inputs, cycles and on-chip / system energy of the
compiled program on the hardware model) at 128 tokens instead of
scheme_comparison_models.MINILM_TOKENS (64); then bench/spls_minilm128_layers.py on the chosen
setting: dense and SPLS on every reporting input on the hardware model, layer by layer
(cycles, on-chip energy, the prediction's share, rows reused), written beside it as
spls_minilm128_layers.json. `--text real` (the default): 128 real tokens per input, the prose
of one pydoc topic each (bench/minilm_real_text.py), so the rows reused are real tokens;
`--text sentences`: single doc sentences zero-padded to 128 (the earlier inputs, where nearly
every reused row is padding). Other arguments are scheme_comparison.py's.

    HF_HUB_OFFLINE=1 python bench/spls_minilm128.py [--text real|sentences] --search quick \
        --no-curves --out-dir bench/results/spls_minilm128
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
    text, argv = text_option(argv)
    scheme_comparison_models.MINILM_TOKENS = TOKENS
    scheme_comparison_models.MINILM_TEXT = text
    fixed = ["--models", "minilm", "--schemes", "dense,spls"]
    status = scheme_comparison.main([*fixed, *argv])
    out_dir = Path(argv[argv.index("--out-dir") + 1]) if "--out-dir" in argv else \
        scheme_comparison.RESULTS
    path = out_dir / "scheme_comparison_minilm.json"
    result = json.loads(path.read_text())  # the command that reproduces it is this script's
    result["command"] = " ".join(["python bench/spls_minilm128.py", "--text", text, *argv])
    path.write_text(json.dumps(result, indent=1) + "\n")
    status = status or scheme_comparison.main([*fixed, "--markdown", *argv])
    return status or spls_minilm128_layers.main(
        ["--tuned", str(path), "--text", text,
         "--json", str(out_dir / "spls_minilm128_layers.json")])


def text_option(argv: list[str]) -> tuple[str, list[str]]:
    """`--text NAME` taken out of argv (scheme_comparison.py does not know it)."""
    if "--text" not in argv:
        return "real", argv
    at = argv.index("--text")
    texts = scheme_comparison_models.MINILM_TEXTS
    if at + 1 >= len(argv) or argv[at + 1] not in texts:
        raise SystemExit(f"--text: expected one of {', '.join(texts)}")
    return argv[at + 1], argv[:at] + argv[at + 2:]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
