"""`init_leaf_op`: an op with no operands, results, successors or regions, set up directly.

xDSL's `Operation.__init__` builds operand and successor use lists, a result list, copies of
the property and attribute dicts, looks the unknown location up by a function-local import and
runs IRDL's default filling, about 6 us for an op that has none of these (12.8 us for an
instruction op with its fields): instruction selection makes one such op per instruction and
per virtual buffer reserved or released (tens of thousands for BERT-base at 512 tokens).
`Operation`'s dataclass fields for those parts have immutable empty class defaults (no
operands, no results, no uses, no parent), so a leaf op needs only its own dicts and location
(0.5 us); nothing else about it differs (test_leaf_op.py: equal to the constructor's op, the
same printed form, verifies).
"""

from __future__ import annotations

from collections.abc import Mapping

from xdsl.dialects.builtin import UNKNOWN_LOC, LocationAttr
from xdsl.ir import Attribute, Operation


def init_leaf_op(op: Operation, properties: dict[str, Attribute],
                 attributes: Mapping[str, Attribute] | None = None,
                 location: LocationAttr | None = None) -> None:
    """Set up `op` (in its class's __init__) with these properties (the dict is kept, not
    copied), attributes and location (unknown when None). Its IRDL definition must have no
    property or attribute defaults to fill in (none of ours do; test_leaf_op.py checks)."""
    op.properties = properties
    op.attributes = dict(attributes) if attributes else {}
    op.location = UNKNOWN_LOC if location is None else location
