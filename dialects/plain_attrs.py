"""`dictionary_attr` and `string_attr`: builtin attributes of plain values, built without
xDSL's generic attribute verification (as `integer_attr.i64_attr` does for i64 integers).

Instruction selection gives each instruction a `component` string and, for a field holding a
virtual address, a dictionary of virtual-buffer numbers (15.7k each for BERT-base at 512
tokens); xDSL's constructors verify every attribute's parameters again (~5 us each). Here a
mapping of strings to attributes is wrapped as it is, and a string's attribute is made once
and shared (attributes are immutable); anything else goes through the constructor, its checks
and its messages. Equal, hashed and printed as the constructors' (test_plain_attrs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from immutabledict import immutabledict
from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.ir import Attribute


def dictionary_attr(entries: Mapping[str, Attribute]) -> DictionaryAttr:
    """DictionaryAttr(entries), verified here: string keys, attribute values."""
    if not all(type(k) is str and isinstance(v, Attribute) for k, v in entries.items()):
        return DictionaryAttr(entries)
    attr = object.__new__(DictionaryAttr)
    object.__setattr__(attr, "data", immutabledict(entries))
    return attr


@lru_cache(maxsize=1 << 10)
def string_attr(text: str) -> StringAttr:
    """StringAttr(text), one shared per string (components and names repeat)."""
    return StringAttr(text)
