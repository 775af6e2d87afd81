"""`spls-no-reuse`: drop the local-similarity step of a layer whose setting can reuse no row.

A `spls.local_similarity` reuses no row when its window is 0 or its threshold lies above
every score it can compute (`spls_kernels.reuse_possible`: scores are cosines or overlap
fractions, at most 1). Its reuse map is then all -1 and every mask it yields is known before
the program runs: the linears and the attention it row-masks compute every row, and its key
mask only skips K / V rows of keys no row selects, which a top-k attention never reads. So
the pass gives those ops their unmasked forms and erases the similarity; what is left of the
prediction is what a top-k attention (`attention=topk`) reads: HLog projection, PAM and
top-k for its SPA. A layer whose attention reads no SPA (`attention=dense`) is left as it is:
there the whole prediction does nothing, and `prediction=off` (insert-spls) is the way to
say so. The outputs are those of the program with the similarity, bit for bit; what
goes is its work (SIMILARITY, cosprob's prob rows, the reuse map and key mask in MBUF, the
SCATTER_ROWS of the masked linears' residuals) and the extra K / V rows are computed
instead (docs/design.md section 6, "No reuse possible").

Runs after `insert-spls` in `--sparsity spls` (esact_cc/sparsity/spls.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from esact_cc.dialects import spls, transformer
from esact_cc.runtime.spls_kernels import reuse_possible
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter


def _unmasked(op: Operation, masks: tuple[SSAValue, ...]) -> Operation | None:
    """`op` without the operands of `masks` (None: an op with no unmasked form)."""
    if isinstance(op, transformer.LinearOp):
        rows = None if op.rows in masks else op.rows
        keys = None if op.keys in masks else op.keys
        return op.with_operands_of(rows=rows, keys=keys,
                                   heads=None if keys is None else op.heads.value.data)
    if isinstance(op, transformer.AttentionOp) and op.rows in masks:
        return op.with_operands_of(rows=None)
    return None


def drop_inert_similarity(module: ModuleOp) -> int:
    """Apply the pass to `module`; returns how many similarities were dropped."""
    dropped = 0
    for sim in [op for op in module.walk() if isinstance(op, spls.LocalSimilarityOp)]:
        spa_readers = [use.operation for use in sim.spa.uses if use.operation is not sim]
        if reuse_possible(sim.window.value.data, sim.threshold.value.data) or not spa_readers:
            continue
        masks = (sim.reuse_map, sim.key_mask)
        users = list(dict.fromkeys(use.operation for value in masks for use in value.uses))
        replacements = {user: _unmasked(user, masks) for user in users}
        if any(new is None for new in replacements.values()):
            continue  # an op this pass cannot unmask reads the masks: keep them
        for old, new in replacements.items():
            assert new is not None
            new.attributes.update(old.attributes)
            new.location = old.location
            Rewriter.replace_op(old, new)
        sim.detach()
        sim.erase()
        dropped += 1
    return dropped


@dataclass(frozen=True)
class SplsNoReusePass(ModulePass):
    """Drop every local similarity that can reuse no row (see the module docstring)."""

    name = "spls-no-reuse"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        drop_inert_similarity(op)
