"""The reference interpreter as SPLS tuning runs it: a memo shared across settings, and records.

All settings of a search step run on the same sample back to back through one memo: an op whose
operands hold the same values as in an earlier run (same op, same attributes, same input
fingerprints) is not recomputed. Reuse maps and SPA masks are fingerprinted by content, so two
settings that take the same decisions in layer l share all the work up to layer l + 1, and a
per-layer search step that changes layer l recomputes only layers l and later. The interpreter
also records the values the accounting reads (prediction, top-k, similarity, masked attention
operands) and can replace the reuse maps by the random control (`RandomReuse`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.ir import Operation, SSAValue

from esact_cc.dialects import spls
from esact_cc.interpreter.reference_interpreter import Interpreter
from esact_cc.runtime.spls_kernels import unmasked_keys
from esact_cc.tuning.spls_accounting import is_masked_attention
from esact_cc.weight_store import WeightStore


def content_fingerprint(array: np.ndarray) -> int:
    data = np.ascontiguousarray(array)
    digest = hashlib.blake2b(data.view(np.uint8).reshape(-1), digest_size=16).digest()
    return hash((data.shape, data.dtype.str, digest))


CONTENT_FINGERPRINTED = (spls.LocalSimilarityOp, spls.TopKOp)
"""Ops whose results are fingerprinted by value (small masks that often coincide)."""
RECORDED = (spls.PredictAttentionOp, spls.TopKOp, spls.LocalSimilarityOp)
"""Ops whose values the accounting reads (and masked attentions: their Q and K operands)."""


@dataclass
class RandomReuse:
    """The control: a random reuse map with the same number of reused real rows per layer and
    input as `counts`, each reused row taking a random one of the last `window` computed rows."""

    counts: dict[int, int]
    """similarity op id -> reused real rows of the SPLS run being controlled."""
    seed: tuple[int, ...]

    def tag(self, op: Operation) -> tuple[Any, ...]:
        return ("random", self.counts.get(id(op), 0), self.seed)

    def replace(self, op: spls.LocalSimilarityOp, args: list[np.ndarray],
                outputs: list[np.ndarray], layer: int) -> list[np.ndarray]:
        spa, pam = args[0], (args[1] if op.pam is not None else None)
        window = op.window.value.data
        rng = np.random.default_rng([*self.seed, layer])
        reuse = np.full(outputs[0].shape, -1, dtype=np.int32)
        keys = np.zeros(outputs[1].shape, dtype=bool)
        for b in range(spa.shape[0]):
            real = (unmasked_keys(pam[b]).any(axis=(0, 1)) if pam is not None
                    else spa[b].any(axis=(0, 1)))
            rows = np.flatnonzero(real)
            n = min(self.counts.get(id(op), 0), max(len(rows) - 1, 0))
            chosen = set(rng.choice(rows[1:], size=n, replace=False).tolist()) if n else set()
            computed: list[int] = []
            for i in range(reuse.shape[1]):
                if i in chosen and computed and window > 0:
                    refs = computed[-window:]
                    reuse[b, i] = refs[int(rng.integers(len(refs)))]
                else:
                    computed.append(i)
            keys[b] = spa[b][:, reuse[b] < 0, :].any(axis=1)
        return [reuse, keys]


class TuningInterpreter(Interpreter):
    """The reference interpreter with a shared memo, recording the prediction ops' values."""

    def __init__(self, store: WeightStore, memo: dict[int, list[np.ndarray]],
                 signatures: dict[Operation, str], layer_of: Mapping[int, int],
                 control: RandomReuse | None = None):
        super().__init__(store)
        self.memo = memo
        self.signatures = signatures
        self.layer_of = layer_of
        self.control = control
        self.fingerprints: dict[SSAValue, int] = {}
        self.records: dict[int, list[np.ndarray]] = {}

    def signature(self, op: Operation) -> str:
        sig = self.signatures.get(op)
        if sig is None:
            # An op with a body (host region) is identified by its full text.
            sig = str(op) if op.regions else f"{op.name}|{op.properties}|{op.attributes}"
            self.signatures[op] = sig
        return sig

    def run_op(self, op: Operation, args: list[np.ndarray]) -> list[np.ndarray]:
        operand_fps = []
        for value, arg in zip(op.operands, args):
            fp = self.fingerprints.get(value)
            if fp is None:  # a block argument: a model input or a region input
                fp = content_fingerprint(arg)
                self.fingerprints[value] = fp
            operand_fps.append(fp)
        randomize = self.control is not None and isinstance(op, spls.LocalSimilarityOp)
        tag = self.control.tag(op) if randomize else None  # type: ignore[union-attr]
        key = hash((self.signature(op), tag, *operand_fps))
        outputs = self.memo.get(key)
        if outputs is None:
            outputs = super().run_op(op, args)
            if randomize:
                assert isinstance(op, spls.LocalSimilarityOp) and self.control is not None
                outputs = self.control.replace(op, args, outputs, self.layer_of[id(op)])
            self.memo[key] = outputs
        by_value = isinstance(op, CONTENT_FINGERPRINTED)
        for index, result in enumerate(op.results):
            self.fingerprints[result] = (content_fingerprint(outputs[index]) if by_value
                                         else hash((key, index)))
        if is_masked_attention(op):
            self.records[id(op)] = args[:2]
        elif isinstance(op, RECORDED):
            self.records[id(op)] = outputs
        return outputs

