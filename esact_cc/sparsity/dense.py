"""`--sparsity dense`: no prediction, no masks; the sparsity stage leaves the IR unchanged."""

from esact_cc.sparsity.registry import SparsityScheme

SCHEME = SparsityScheme("dense", "every row, key and head computed", None, lambda settings: [])
