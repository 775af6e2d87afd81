"""`i64_attr`: an i64 `IntegerAttr`, built without xDSL's generic attribute verification.

`IntegerAttr(value, i64)` normalizes the value and runs IRDL's parameter verification, about
14 us a time; instruction selection makes one per instruction field, virtual buffer and
placement directive (50k for BERT-base at 512 tokens). For a Python int within the i64 range
there is nothing to normalize or reject, so the attribute is assembled from its two
parameters directly (2.5 us); anything else goes through the constructor, its checks and its
messages. Equal, hashed and printed as `IntegerAttr(value, i64)` (test_integer_attr.py).
"""

from __future__ import annotations

from functools import lru_cache

from xdsl.dialects.builtin import IntAttr, IntegerAttr, i64

_I64_VALUES = range(-(1 << 63), 1 << 63)


@lru_cache(maxsize=1 << 16)
def i64_attr(value: int) -> IntegerAttr:
    # Cached: attributes are immutable, and most values (sizes, flags, queue masks) repeat.
    if type(value) is not int or value not in _I64_VALUES:
        return IntegerAttr(value, i64)
    attr = object.__new__(IntegerAttr)
    object.__setattr__(attr, "value", IntAttr(value))
    object.__setattr__(attr, "type", i64)
    return attr
