"""Writes insert_spls_layer.npz, the weights of test/lit/passes/insert_spls.mlir (deterministic).

One pre-LN encoder layer, width 8, 2 heads, FFN 16. Run:
python test/lit/passes/Inputs/make_insert_spls_layer.py
"""

from pathlib import Path

import numpy as np

from esact_cc.weight_store import WeightStore

rng = np.random.default_rng(6)
arrays = {name: rng.standard_normal(shape).astype(np.float32) * 0.5
          for name, shape in (("wq", (8, 8)), ("wk", (8, 8)), ("wv", (8, 8)), ("wo", (8, 8)),
                              ("w1", (8, 16)), ("w2", (16, 8)))}
arrays |= {name: rng.standard_normal(n).astype(np.float32) * 0.1
           for name, n in (("bq", 8), ("bk", 8), ("bv", 8), ("bo", 8), ("b1", 16), ("b2", 8))}
arrays |= {"g1": np.ones(8, np.float32), "be1": np.zeros(8, np.float32),
           "g2": np.ones(8, np.float32), "be2": np.zeros(8, np.float32)}
WeightStore(arrays).save(Path(__file__).with_name("insert_spls_layer.npz"))
