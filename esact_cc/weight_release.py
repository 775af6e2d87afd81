"""Freeing the weights a compile no longer needs, once `quantize` has made their INT8 forms.

An imported model's weights are views of the ONNX file read into memory, and the store keeps
every one: through lowering and emission a BERT-base compile held the 415 MB file beside its
INT8 weights and the binary, about 2.5x the file at its peak. After the `quantized` stage the
FP32 GEMM weights are dead; `release_unreferenced_weights` keeps only the weights the module
still names (by any string attribute: a weight is only ever named, never held, by the IR),
each in its own memory, so the file's buffer is freed (peak 1042 -> ~720 MiB for BERT-base).
"""

from __future__ import annotations

from collections.abc import Iterator

from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Attribute, ParametrizedAttribute

from esact_cc.weight_store import WeightStore


def _strings(attribute: object) -> Iterator[str]:
    if isinstance(attribute, StringAttr):
        yield attribute.data
    elif isinstance(attribute, ParametrizedAttribute):
        for parameter in attribute.parameters:
            yield from _strings(parameter)
    elif isinstance(attribute, (tuple, list)):
        for item in attribute:
            yield from _strings(item)
    elif isinstance(attribute, dict):
        for item in attribute.values():
            yield from _strings(item)
    elif isinstance(attribute, Attribute) and hasattr(attribute, "data"):
        yield from _strings(attribute.data)  # ArrayAttr, DictionaryAttr


def named_strings(module: ModuleOp) -> set[str]:
    """Every string any attribute or property of the module holds (weight names among them)."""
    names: set[str] = set()
    for op in module.walk():
        for attribute in (*op.attributes.values(), *op.properties.values()):
            names.update(_strings(attribute))
    names.update(s for a in module.attributes.values() for s in _strings(a))
    return names


def release_unreferenced_weights(module: ModuleOp, store: WeightStore) -> None:
    """Keep only the weights `module` names, each in its own memory (see the module doc)."""
    store.keep_only(named_strings(module))
