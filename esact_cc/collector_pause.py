"""`collector_paused`: Python's cyclic garbage collector off while a compile step runs.

xDSL IR is made of reference cycles (op <-> block <-> region, results <-> uses), so every full
collection walks the whole IR, and a compile allocates enough to trigger many while freeing
almost no cycles: BERT-base at 512 tokens spent 1.2 s of its 11 s of CPU in 1,160 collections
(8 full ones 0.95 s) that found 18,385 unreachable objects in all (at 128 tokens 0.24 s):
0.47 s in `schedule`, 0.50 s in instruction selection, 0.25 s in emission. A compile
(`pipeline.compile_model`, `continue_pipeline`) pauses it, and so do the steps also called on
their own (the lift, schedule, emission); the cycles a paused step frees are collected by the
first collection after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector disabled inside (nested uses leave it to the outermost); also a
    decorator."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
