"""Writes tiny_layer.npz, the weights of the back-end pass lit tests (deterministic).

Run: python test/lit/passes/Inputs/make_tiny_layer.py
"""

from pathlib import Path

import numpy as np

from esact_cc.weight_store import WeightStore

rng = np.random.default_rng(0)
arrays = {
    "w": rng.standard_normal((8, 8)).astype(np.float32) * 0.5,
    "b": rng.standard_normal(8).astype(np.float32) * 0.1,
    "w2": rng.standard_normal((8, 16)).astype(np.float32) * 0.5,
    "b2": rng.standard_normal(16).astype(np.float32) * 0.1,
    "gamma": np.ones(8, np.float32),
    "beta": np.zeros(8, np.float32),
    "pos": rng.standard_normal((1, 4, 8)).astype(np.float32),
    # Already-quantized weights for the lower-to-esact / schedule tests.
    "w8": rng.integers(-127, 128, (8, 8)).astype(np.int8),
    "s8": np.full(8, 0.01, np.float32),
    "w28": rng.integers(-127, 128, (8, 16)).astype(np.int8),
    "s28": np.full(16, 0.02, np.float32),
    "gs8": np.array([0.015625, 0.25], np.float32),  # input group scales, groups of 4 channels
}
WeightStore(arrays).save(Path(__file__).with_name("tiny_layer.npz"))
