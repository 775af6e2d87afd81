"""Family coverage: export small random Hugging Face models and see how far esact-cc takes them.

Per family (BERT ... Phi, `FAMILIES`), exporter (TorchScript `legacy`, torch.export `dynamo`)
and attention implementation (`eager`, `sdpa`), one case:
1. export a small random config (2 layers, hidden 64; batch 1; seq 16 or a 32x32 image),
   cached in --work-dir, with onnxruntime's outputs on one test input;
2. compile to the `transformer` stage: attention / linear / norm ops lifted of total and the
   host regions with their reasons (`esact_cc.lift_summary`);
3. dense INT8: compile to a binary with calibration data (4 random inputs), run it on the
   functional model, cosine of the first output vs onnxruntime;
4. SPLS (`--sparsity spls` with row reuse enabled: window=4, threshold=0.9): compiles and runs
   (yes/no) and the reused-row fraction of the run.
Each case runs in its own process under a wall-clock cap (--case-timeout); --jobs cases run at
once. Writes bench/results/coverage_families.{json,md}. Needs torch and transformers (bench
only, never tests).

    python bench/coverage_families.py [--jobs 2] [--only bert,gpt2] [--case-timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SEQ = 16
IMAGE = 32
CALIBRATION_SAMPLES = 4
SPLS_OPTIONS = ["window=4", "threshold=0.9"]
OUTPUT = "last_hidden_state"
"""The one output every export has (the wrapper returns the model's last hidden state)."""
EXPORTERS = ("legacy", "dynamo")
ATTENTIONS = ("eager", "sdpa")
SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128}
TEXT = {"vocab_size": 128, "max_position_embeddings": 64}
DECODER = {**SMALL, "vocab_size": 128, "max_position_embeddings": 64, "num_key_value_heads": 2}

# name -> (config class, model kind, config overrides). Kinds: `encoder` (input_ids +
# attention_mask, last_hidden_state), `decoder` (the same, causal), `vision` (pixel_values),
# `whisper` (input_features into the encoder), `t5` (T5EncoderModel), `clip_text`.
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bert": ("BertConfig", "encoder", {**SMALL, **TEXT}),
    "distilbert": ("DistilBertConfig", "encoder",
                   {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, **TEXT}),
    "roberta": ("RobertaConfig", "encoder", {**SMALL, **TEXT}),
    "albert": ("AlbertConfig", "encoder", {**SMALL, **TEXT, "embedding_size": 32}),
    "electra": ("ElectraConfig", "encoder", {**SMALL, **TEXT, "embedding_size": 32}),
    "deberta_v2": ("DebertaV2Config", "encoder",  # deberta-v3's disentangled attention
                   {**SMALL, **TEXT, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                    "position_buckets": 16, "share_att_key": True, "norm_rel_ebd": "layer_norm",
                    "position_biased_input": False}),
    "vit": ("ViTConfig", "vision", {**SMALL, "image_size": IMAGE, "patch_size": 8}),
    "deit": ("DeiTConfig", "vision", {**SMALL, "image_size": IMAGE, "patch_size": 8}),
    "beit": ("BeitConfig", "vision", {**SMALL, "image_size": IMAGE, "patch_size": 8,
                                      "vocab_size": 128}),
    "swin": ("SwinConfig", "vision", {"image_size": IMAGE, "patch_size": 4, "embed_dim": 32,
                                      "depths": [1, 1], "num_heads": [2, 4], "window_size": 4}),
    "clip_text": ("CLIPTextConfig", "clip_text", {**SMALL, **TEXT}),
    "clip_vision": ("CLIPVisionConfig", "vision", {**SMALL, "image_size": IMAGE,
                                                   "patch_size": 8}),
    "whisper_encoder": ("WhisperConfig", "whisper",
                        {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
                         "encoder_ffn_dim": 128, "decoder_layers": 1,
                         "decoder_attention_heads": 4, "decoder_ffn_dim": 128,
                         "num_mel_bins": 16, "max_source_positions": SEQ, "vocab_size": 128,
                         "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
                         "decoder_start_token_id": 1}),
    "t5_encoder": ("T5Config", "t5", {"d_model": 64, "num_layers": 2, "num_heads": 4,
                                      "d_ff": 128, "d_kv": 16, "vocab_size": 128}),
    "gpt2": ("GPT2Config", "decoder", {"n_embd": 64, "n_layer": 2, "n_head": 4,
                                       "vocab_size": 128, "n_positions": 64}),
    "gpt_neo": ("GPTNeoConfig", "decoder", {"hidden_size": 64, "num_layers": 2,
                                            "num_heads": 4, "attention_types": [[["global",
                                            "local"], 1]], "window_size": 8,
                                            "vocab_size": 128, "max_position_embeddings": 64}),
    "opt": ("OPTConfig", "decoder", {"hidden_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 4, "ffn_dim": 128,
                                     "word_embed_proj_dim": 64, "vocab_size": 128,
                                     "max_position_embeddings": 64}),
    "bloom": ("BloomConfig", "decoder", {"hidden_size": 64, "n_layer": 2, "n_head": 4,
                                         "vocab_size": 128}),
    "llama": ("LlamaConfig", "decoder", DECODER),
    "mistral": ("MistralConfig", "decoder", {**DECODER, "sliding_window": 8}),
    "qwen2": ("Qwen2Config", "decoder", DECODER),
    "phi": ("PhiConfig", "decoder", {**DECODER, "partial_rotary_factor": 0.5}),
}


# --- export (torch) ---------------------------------------------------------------------------
def _build(family: str, attention: str) -> Any:
    import torch
    import transformers

    config_class, kind, overrides = FAMILIES[family]
    config = getattr(transformers, config_class)(**overrides)
    torch.manual_seed(0)
    if kind == "t5":
        model = transformers.T5EncoderModel._from_config(config, attn_implementation=attention)
    elif kind == "whisper":
        model = transformers.WhisperModel._from_config(
            config, attn_implementation=attention).get_encoder()
    elif kind == "clip_text":
        model = transformers.CLIPTextModel._from_config(config, attn_implementation=attention)
    elif family == "clip_vision":
        model = transformers.CLIPVisionModel._from_config(config, attn_implementation=attention)
    else:
        model = transformers.AutoModel.from_config(config, attn_implementation=attention)
    with torch.no_grad():  # non-trivial gains and biases (HF init: exactly 1 and 0)
        generator = torch.Generator().manual_seed(1)
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            if p.dim() == 1 and not name.endswith("bias"):
                p.copy_(1.0 + 0.1 * noise)  # norm gains
            else:
                p.copy_(0.02 * noise)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model.eval(), kind


def sample_inputs(family: str, kind: str, model: Any, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    config = model.config
    if kind == "vision":
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": rng.standard_normal((1, channels, IMAGE, IMAGE))
                .astype(np.float32)}
    if kind == "whisper":
        frames = 2 * config.max_source_positions
        return {"input_features": rng.standard_normal((1, config.num_mel_bins, frames))
                .astype(np.float32)}
    ids = rng.integers(1, config.vocab_size, size=(1, SEQ), dtype=np.int64)
    mask = np.ones((1, SEQ), dtype=np.int64)
    if kind in ("encoder", "t5"):
        mask[:, SEQ - SEQ // 4:] = 0  # padded tail: the additive mask is exercised
    return {"input_ids": ids, "attention_mask": mask}


class _FirstOutput:
    """Wraps a model so the export has one tensor output: last_hidden_state."""

    def __new__(cls, model: Any, names: list[str]) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return self.model(**dict(zip(names, args, strict=True)),
                                  return_dict=True).last_hidden_state

        return Wrapper().eval()


def export_case(family: str, exporter: str, attention: str, path: Path) -> None:
    """Write the ONNX model, its test input and onnxruntime's output, and calibration data."""
    import onnxruntime as ort
    import torch

    model, kind = _build(family, attention)
    inputs = sample_inputs(family, kind, model, seed=0)
    wrapped = _FirstOutput(model, list(inputs))
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    common = {"input_names": list(inputs), "output_names": [OUTPUT]}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if exporter == "legacy":
            torch.onnx.export(wrapped, args, str(path), dynamo=False, opset_version=17,
                              do_constant_folding=True, **common)
        else:
            torch.onnx.export(wrapped, args, str(path), dynamo=True, opset_version=18,
                              external_data=False, **common)
    np.savez(path.with_suffix(".inputs.npz"), **inputs)
    expected = ort.InferenceSession(str(path)).run(None, inputs)[0]
    np.save(path.with_suffix(".expected.npy"), expected)
    samples = [sample_inputs(family, kind, model, seed=100 + i)
               for i in range(CALIBRATION_SAMPLES)]
    np.savez(path.with_suffix(".calib.npz"),
             **{name: np.concatenate([s[name] for s in samples]) for name in inputs})


# --- one case (esact-cc) ----------------------------------------------------------------------
def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def run_case(family: str, exporter: str, attention: str, work_dir: Path) -> dict[str, Any]:
    from esact_cc import api
    from esact_cc.lift_summary import summarize_lift

    row: dict[str, Any] = {"family": family, "exporter": exporter, "attention": attention}
    path = work_dir / f"{family}-{exporter}-{attention}.onnx"
    start = time.monotonic()
    try:
        if not path.with_suffix(".calib.npz").exists():  # written last: the export is whole
            export_case(family, exporter, attention, path)
    except Exception as exc:  # noqa: BLE001 - a failed export is a result
        row["export_error"] = _error(exc)
        return row
    row["export_s"] = round(time.monotonic() - start, 1)
    inputs = dict(np.load(path.with_suffix(".inputs.npz")))
    expected = np.load(path.with_suffix(".expected.npy"))
    calibration = str(path.with_suffix(".calib.npz"))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            lifted = api.compile(path, stage="transformer")
        row["lift"] = summarize_lift(lifted.module).to_json()
    except Exception as exc:  # noqa: BLE001
        row["compile_error"] = _error(exc)
        return row
    try:
        with contextlib.redirect_stderr(stderr):
            dense = api.compile(path, stage="esb", calibration_data=calibration)
            got = dense.simulate(inputs).outputs[OUTPUT]
        row["dense_cosine"] = round(_cosine(got, expected), 5)
    except Exception as exc:  # noqa: BLE001
        row["dense_error"] = _error(exc)
    try:
        with contextlib.redirect_stderr(stderr):
            sparse = api.compile(path, stage="esb", calibration_data=calibration,
                                 sparsity="spls", sparsity_option=SPLS_OPTIONS)
            result = sparse.simulate(inputs)
        spls = result.report.get("spls", {})
        row["spls"] = {"runs": True,
                       "reused_row_fraction": round(spls.get("reused_row_fraction", 0.0), 4),
                       "cosine": round(_cosine(result.outputs[OUTPUT], expected), 5)}
    except Exception as exc:  # noqa: BLE001
        row["spls"] = {"runs": False, "error": _error(exc)}
    row["seconds"] = round(time.monotonic() - start, 1)
    return row


# --- driver -----------------------------------------------------------------------------------
def _run_in_process(case: tuple[str, str, str], work_dir: Path, timeout: float) -> dict[str, Any]:
    family, exporter, attention = case
    command = [sys.executable, __file__, "--case", f"{family},{exporter},{attention}",
               "--work-dir", str(work_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"family": family, "exporter": exporter, "attention": attention,
                "error": f"over the {timeout:g} s cap"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"family": family, "exporter": exporter, "attention": attention,
                "error": f"exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def _fraction(row: dict[str, Any], kind: str) -> str:
    lift = row.get("lift")
    return f"{lift['lifted'][kind]}/{lift['total'][kind]}" if lift else "-"


def _status(row: dict[str, Any]) -> str:
    for key in ("error", "export_error", "compile_error"):
        if key in row:
            return f"{key.replace('_', ' ')}: {row[key]}"
    return ""


def _commits(rows: list[dict[str, Any]]) -> str:
    """Which commit measured how many rows, when an --update mixed them."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("commit", "?")] = counts.get(row.get("commit", "?"), 0) + 1
    if len(counts) < 2:
        return ""
    return "rows measured at " + ", ".join(f"{c} ({n})" for c, n in counts.items()) + "; "


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = ["# Family coverage", "",
           f"`{meta.get('command', 'python bench/coverage_families.py')}` at {meta['commit']} "
           f"({meta['date']}); {_commits(rows)}"
           f"{meta['cases']} cases, {meta['seconds']:.0f} s. Small random configs, batch 1. "
           "Lifted = ops on the accelerator of that kind's total; host = transformer.host "
           "regions; dense = INT8 binary on the functional model vs onnxruntime (cosine, "
           f"calibrated on {CALIBRATION_SAMPLES} random inputs); SPLS = "
           f"`--sparsity spls {' '.join(SPLS_OPTIONS)}` compiles and runs, reused-row "
           "fraction.", "",
           "| family | export | attn | attention | linear | norm | host | dense cos | SPLS "
           "(reuse) | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lift = row.get("lift")
        host = str(len(lift["host_regions"])) if lift else "-"
        dense = (f"{row['dense_cosine']:.4f}" if "dense_cosine" in row
                 else "error" if "dense_error" in row else "-")
        spls = row.get("spls")
        spls_text = ("-" if spls is None else f"yes ({spls['reused_row_fraction']:.2f})"
                     if spls["runs"] else "no")
        note = _ANSI.sub("", _status(row) or row.get("dense_error")
                         or (spls or {}).get("error", ""))
        if not note and lift:
            unlifted = [r["reason"] for r in lift["host_regions"] if "not lifted" in r["reason"]]
            note = unlifted[0] if unlifted else ""
        out.append(f"| {row['family']} | {row['exporter']} | {row['attention']} | "
                   f"{_fraction(row, 'attention')} | {_fraction(row, 'linear')} | "
                   f"{_fraction(row, 'norm')} | {host} | {dense} | {spls_text} | "
                   f"{note.replace('|', '/')[:160]} |")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated families (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--case-timeout", type=float, default=600.0)
    parser.add_argument("--work-dir", default="/tmp/esact_coverage_models")
    parser.add_argument("--out", default=str(RESULTS / "coverage_families"))
    parser.add_argument("--update", action="store_true",
                        help="rerun --only's families into the existing --out table, keeping the "
                        "other rows (each row records the commit it was measured at)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # family,exporter,attention
    args = parser.parse_args()
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.case:
        family, exporter, attention = args.case.split(",")
        try:
            row = run_case(family, exporter, attention, work_dir)
        except Exception as exc:  # noqa: BLE001 - the driver records it
            traceback.print_exc()
            row = {"family": family, "exporter": exporter, "attention": attention,
                   "error": _error(exc)}
        print(json.dumps(row))
        return 0
    families = args.only.split(",") if args.only else list(FAMILIES)
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    cases = [(f, e, a) for f in families for e in EXPORTERS for a in ATTENTIONS]
    start = time.monotonic()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    rows: dict[int, dict[str, Any]] = {}
    out = Path(args.out)
    kept = _rows_kept(out, families, commit) if args.update else []
    writing = threading.Lock()

    def run(index: int) -> None:
        row = _run_in_process(cases[index], work_dir, args.case_timeout) | {"commit": commit}
        with writing:  # written after each case: a stopped run keeps what it measured
            rows[index] = row
            done = _in_family_order(kept + [rows[i] for i in sorted(rows)])
            write(out, done, len(kept) + len(cases), commit, start)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(run, range(len(cases))))
    print(out.with_suffix(".md").read_text())
    return 0


def _rows_kept(out: Path, rerun: list[str], commit: str) -> list[dict[str, Any]]:
    """The rows of an earlier run (`--update`) for the families not rerun now."""
    path = out.with_suffix(".json")
    if not path.is_file():
        sys.exit(f"coverage_families.py: error: --update: no earlier table at {path}")
    earlier = json.loads(path.read_text())
    return [row | {"commit": row.get("commit", earlier["meta"]["commit"])}
            for row in earlier["rows"] if row["family"] not in rerun]


def _in_family_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {(f, e, a): i for i, (f, e, a) in enumerate(
        (f, e, a) for f in FAMILIES for e in EXPORTERS for a in ATTENTIONS)}
    return sorted(rows, key=lambda r: order[(r["family"], r["exporter"], r["attention"])])


def write(out: Path, done: list[dict[str, Any]], cases: int, commit: str, start: float) -> None:
    meta = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cases": f"{len(done)} of {cases}", "seconds": time.monotonic() - start,
            "command": " ".join(["python", "bench/coverage_families.py", *sys.argv[1:]])}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": done}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(done, meta))


if __name__ == "__main__":
    sys.exit(main())
