"""`dictionary_attr` and `string_attr` build the attributes `DictionaryAttr(...)` and
`StringAttr(...)` would, and leave anything they cannot build directly to those constructors'
checks."""

import pytest
from esact_cc.dialects.integer_attr import i64_attr
from esact_cc.dialects.plain_attrs import dictionary_attr, string_attr
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.dialects.builtin import DictionaryAttr, StringAttr


@settings(deadline=None)  # the first example imports and prints; the machine is shared
@given(st.dictionaries(st.text(max_size=8), st.integers(-(1 << 63), (1 << 63) - 1).map(i64_attr),
                       max_size=5))
def test_same_dictionary_as_the_constructor(entries):
    made, reference = dictionary_attr(entries), DictionaryAttr(entries)
    assert made == reference and hash(made) == hash(reference) and str(made) == str(reference)
    made.verify()  # what IRDL's verifier would check holds
    entries.clear()  # the attribute holds its own copy
    assert made == reference


def test_a_bad_entry_is_left_to_the_constructor():
    for bad in ({1: i64_attr(0)}, {"a": 3}):
        try:
            reference = DictionaryAttr(bad)
        except Exception as e:  # noqa: BLE001 (whatever it raises, dictionary_attr raises)
            with pytest.raises(type(e), match=str(e)):
                dictionary_attr(bad)
        else:
            made = dictionary_attr(bad)
            assert made.data == reference.data and type(made) is type(reference)


@settings(deadline=None)
@given(st.text(max_size=12))
def test_same_string_as_the_constructor_shared(text):
    made = string_attr(text)
    assert made == StringAttr(text) and hash(made) == hash(StringAttr(text))
    assert string_attr(text) is made
