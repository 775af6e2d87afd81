"""Re-export a digits ViT (the bundled one or a fine-tuned copy) at batch B.

scripts/train_digits_vit.py exports batch 1, and its graph fixes the batch in constants (the
attention Reshapes, the CLS expand), so the model cannot simply be given another input shape.
This loads the ONNX model's weights into that script's torch module and exports it again with
`pixel_values` [B, 1, 8, 8] and `logits` [B, 10]; the images of a batch are independent, so
row b of the logits is the batch-1 model's logits on image b (checked with onnxruntime before
the file is written).

    python bench/digits_vit_batch.py [--model FILE.onnx] --batch B -o OUT.onnx

Needs torch (the `models` extra); the tests never import it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

MATMUL_NODE = re.compile(r"^/(blocks\.\d+/(?:attn/)?(?:query|key|value|out|fc1|fc2))/MatMul$")
"""The legacy exporter's name of a Linear's MatMul; its weight initializer is anonymous
(`onnx::MatMul_459`), [in, out], the transpose of the torch weight."""


def state_dict_from_onnx(path: Path) -> dict[str, np.ndarray]:
    """The torch state dict of train_digits_vit.DigitsViT held in an exported ONNX model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {name: value for name, value in tensors.items() if not name.startswith("onnx::")}
    for node in graph.node:
        match = MATMUL_NODE.match(node.name)
        if match and node.input[1] in tensors:
            state[match.group(1).replace("/", ".") + ".weight"] = tensors[node.input[1]].T
    return state


def export_batch(model_path: Path, batch: int, out: Path) -> None:
    """Write `model_path`'s weights exported at `batch`; refuse if a logit row differs from
    the batch-1 model's on the same image (onnxruntime, random digits-like images)."""
    import onnxruntime as ort
    import torch
    from train_digits_vit import ARCH, INPUT_NAME, DigitsViT, export

    model = DigitsViT(ARCH, pos_std=0.0)
    state = {k: torch.from_numpy(np.array(v)) for k, v in
             state_dict_from_onnx(model_path).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"error: {model_path} is not a digits ViT export: missing {missing}, "
                         f"unexpected {unexpected}")
    model.eval()
    export(model, out, "legacy", batch=batch)
    images = np.random.default_rng(0).uniform(0, 1, (batch, 1, 8, 8)).astype(np.float32)
    one = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rows = np.concatenate([one.run(None, {INPUT_NAME: image[None]})[0] for image in images])
    batched = many.run(None, {INPUT_NAME: images})[0]
    if not np.allclose(rows, batched, atol=1e-4):
        out.unlink()
        raise SystemExit(f"error: batch-{batch} export differs from {model_path} by "
                         f"{np.abs(rows - batched).max():.3g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "esact_cc" / "models" / "digits_vit.onnx")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.batch < 1:
        raise SystemExit(f"error: --batch must be >= 1, got {args.batch}")
    if not args.model.is_file():
        raise SystemExit(f"error: no model file {args.model}")
    export_batch(args.model, args.batch, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
