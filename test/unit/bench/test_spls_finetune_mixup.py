"""bench/spls_finetune.py's mixed training inputs (`--mixup`): seeded convex mixes of two
images each (no torch, no digits model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))

from spls_finetune import mixed_pairs  # noqa: E402


def test_each_mix_lies_between_two_of_the_images_and_the_run_is_seeded():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 16, (5, 1, 8, 8)).astype(np.float32)
    mixes = mixed_pairs(images, 3, seed=2)
    assert mixes.shape == (15, 1, 8, 8) and mixes.dtype == np.float32
    assert np.array_equal(mixes, mixed_pairs(images, 3, seed=2))
    assert not np.array_equal(mixes, mixed_pairs(images, 3, seed=3))
    flat = images.reshape(5, -1).astype(np.float64)
    for mix in mixes.reshape(15, -1):
        # some pair (a, b) and share l in [0, 1] with mix = l a + (1 - l) b
        found = False
        for a in range(5):
            for b in range(5):
                d = flat[a] - flat[b]
                share = 1.0 if not d.any() else float(np.dot(mix - flat[b], d) / np.dot(d, d))
                if -1e-6 <= share <= 1 + 1e-6 and np.allclose(share * d + flat[b], mix,
                                                                atol=1e-4):
                    found = True
        assert found
