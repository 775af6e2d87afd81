"""Train the bundled default model: a 4-layer pre-LN ViT on scikit-learn's 8x8 digits.

Writes, into esact_cc/models/ (package data, all together < 1 MB):
  digits_vit.onnx    the trained classifier, batch 1, input `pixel_values` [1, 1, 8, 8] float32
                     (pixel / 16), output `logits` [1, 10]
  digits_test.npz    held-out test split: `images` [N, 1, 8, 8] float32, `labels` [N] int64
  digits_calib.npz   calibration split drawn from the training data: `images`, `labels`
  digits_vit.json    metadata: input/output names and shapes, accuracies, command, seed

The architecture is the one docs/design.md section 6 measures SPLS on: 2x2-pixel patches give 16
patch tokens + CLS = 17 tokens, hidden 64, 4 heads, FFN 128 with erf GELU, pre-LN blocks,
final LN, linear head on CLS. Attention is written out (MatMul, scale, Softmax, MatMul) the way
HF "eager" attention is, so the export has the same pattern the real models have.

Needs torch and scikit-learn (the `models` extra); never imported by the tests.
Run: python scripts/train_digits_vit.py   (about 30 s on a laptop CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "esact_cc" / "models"

# One source of truth for the architecture; also written to the metadata file.
ARCH = {
    "image_size": 8,
    "patch_size": 2,
    "hidden": 64,
    "heads": 4,
    "layers": 4,
    "ffn": 128,
    "classes": 10,
    "layer_norm_eps": 1e-5,
}
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
PIXEL_SCALE = 16.0  # digits pixels are integers 0..16
TEST_FRACTION = 0.2
CALIB_SIZE = 256
POS_STD = 0.02  # init std of the learned position embedding (ViT convention); --pos-std varies it


class Attention(nn.Module):
    """Multi-head self-attention written as eager MatMul / scale / Softmax / MatMul."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, h)
        return self.out(ctx)


class Block(nn.Module):
    """Pre-LN Transformer block: x + Attn(LN1(x)), then x + FFN(LN2(x))."""

    def __init__(self, hidden: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.attn = Attention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class DigitsViT(nn.Module):
    def __init__(self, a: dict, pos_std: float) -> None:
        super().__init__()
        n_patches = (a["image_size"] // a["patch_size"]) ** 2
        self.patch = nn.Conv2d(1, a["hidden"], a["patch_size"], stride=a["patch_size"])
        self.cls = nn.Parameter(torch.zeros(1, 1, a["hidden"]))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, a["hidden"]) * pos_std)
        self.blocks = nn.ModuleList(
            Block(a["hidden"], a["heads"], a["ffn"], a["layer_norm_eps"]) for _ in range(a["layers"])
        )
        self.norm = nn.LayerNorm(a["hidden"], eps=a["layer_norm_eps"])
        self.head = nn.Linear(a["hidden"], a["classes"])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)  # [B, 16, H]
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def load_splits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified train/test split; calibration is a fixed subset of train."""
    digits = load_digits()
    images = (digits.images / PIXEL_SCALE).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=seed, stratify=labels
    )
    calib_idx = np.random.default_rng(seed).choice(len(x_tr), CALIB_SIZE, replace=False)
    calib_idx.sort()
    return {"train": (x_tr, y_tr), "test": (x_te, y_te), "calib": (x_tr[calib_idx], y_tr[calib_idx])}


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    batch = 128
    steps = epochs * math.ceil(len(xt) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            loss = nn.functional.cross_entropy(
                model(xt[idx]), yt[idx], label_smoothing=0.05
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def export(model: nn.Module, path: Path, exporter: str, batch: int = 1) -> None:
    """Export with a fixed `batch` (1 for the bundled model; bench/digits_vit_batch.py others).
    `exporter` is 'legacy' (TorchScript, opset 17) or 'dynamo' (18).

    Legacy is the default: its node names are module paths (`/blocks.0/attn/query/MatMul`), so
    IR locations and debug maps are readable; layer norm is the fused op, linears are MatMul +
    Add, the head is one Gemm. Its one wart is a shape-only subgraph (Shape/Slice/Concat/
    ConstantOfShape/Equal/Where) computing the CLS `expand` size, which the frontend folds.
    Dynamo has no such subgraph but names nodes `node_linear_3` and merges initializers with equal
    values across layers.
    """
    dummy = torch.zeros(batch, 1, 8, 8)
    kwargs = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if exporter == "legacy":
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=17, **kwargs)
    else:
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=True, opset_version=18, external_data=False, **kwargs
        )


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds = [int(np.argmax(sess.run(None, {INPUT_NAME: x[i : i + 1]})[0])) for i in range(len(x))]
    return float(np.mean(np.array(preds) == y))


def save_atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; package data must be world-readable
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy")
    ap.add_argument("--pos-std", type=float, default=POS_STD,
                    help="std of the learned position embedding's random init")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    # One thread: the model is tiny, so extra threads only add synchronisation overhead.
    torch.set_num_threads(1)
    splits = load_splits(args.seed)
    model = DigitsViT(ARCH, args.pos_std)
    t0 = time.time()
    train(model, *splits["train"], epochs=args.epochs, seed=args.seed)
    train_s = time.time() - t0
    with torch.no_grad():
        x_te, y_te = splits["test"]
        torch_acc = float((model(torch.from_numpy(x_te)).argmax(-1).numpy() == y_te).mean())

    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "digits_vit.onnx"
    tmp_onnx = args.out / "digits_vit.onnx.tmp"
    export(model, tmp_onnx, args.exporter)
    onnx.checker.check_model(str(tmp_onnx))
    ort_acc = ort_accuracy(tmp_onnx, x_te, y_te)
    os.replace(tmp_onnx, onnx_path)
    save_atomic_npz(args.out / "digits_test.npz", images=x_te, labels=y_te)
    save_atomic_npz(args.out / "digits_calib.npz", images=splits["calib"][0], labels=splits["calib"][1])

    proto = onnx.load(str(onnx_path))
    meta = {
        "model": "digits_vit.onnx",
        "task": "scikit-learn digits classification (10 classes)",
        "architecture": ARCH | {"tokens": (ARCH["image_size"] // ARCH["patch_size"]) ** 2 + 1,
                                "norm": "pre-LN", "gelu": "erf"},
        "inputs": [{"name": INPUT_NAME, "shape": [1, 1, 8, 8], "dtype": "float32",
                    "preprocessing": f"pixel / {PIXEL_SCALE:g}"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [1, 10], "dtype": "float32"}],
        "exporter": {"legacy": "torch.onnx.export(dynamo=False) TorchScript",
                     "dynamo": "torch.onnx.export(dynamo=True)"}[args.exporter],
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "torch_version": torch.__version__,
        "seed": args.seed,
        "epochs": args.epochs,
        "pos_std": args.pos_std,
        "splits": {"train": len(splits["train"][1]), "test": len(y_te), "calib": CALIB_SIZE,
                   "test_fraction": TEST_FRACTION, "stratified": True},
        "test_accuracy_torch": round(torch_acc, 4),
        "test_accuracy_onnxruntime": round(ort_acc, 4),
        "test_file": "digits_test.npz",
        "calibration_file": "digits_calib.npz",
        "npz_keys": {"images": "[N, 1, 8, 8] float32", "labels": "[N] int64"},
        "command": "python scripts/train_digits_vit.py"
        + ("" if args.seed == 0 else f" --seed {args.seed}")
        + ("" if args.epochs == 60 else f" --epochs {args.epochs}")
        + ("" if args.exporter == "legacy" else f" --exporter {args.exporter}")
        + ("" if args.pos_std == POS_STD else f" --pos-std {args.pos_std:g}"),
    }
    fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out / "digits_vit.json")
    print(f"trained in {train_s:.1f} s; test accuracy torch {torch_acc:.4f}, "
          f"onnxruntime {ort_acc:.4f}; wrote {onnx_path} ({onnx_path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
