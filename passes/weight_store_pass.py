"""The weight store as an explicit pass field.

A pass that reads or adds weights declares `store: WeightStore | None` (`WeightStorePass` gives
it, keyword-only, out of the pass's textual options). Whoever builds the pipeline constructs the
pass with the store of the module it runs on: `esact_cc.pipeline` for esact-cc and the Python
API, esact-opt for a textual pipeline (`-p quantize`: the store its input's
`esact.weight_store` names). `with_store` fills the field of any pass that has one, so a scheme's
passes (`SparsityScheme.passes`) get the store without the scheme API carrying it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import ArgSpec

from esact_cc.runtime.errors import CompileError
from esact_cc.weight_store import WeightStore

STORE_FIELD = "store"
"""The field name every weight-reading pass uses for its store."""


@dataclass(frozen=True)
class WeightStorePass(ModulePass):
    """A pass with the module's weight store as a constructor field."""

    store: WeightStore | None = field(default=None, compare=False, repr=False, kw_only=True)
    """The weights of the module the pass runs on (not a textual option)."""

    def weights(self) -> WeightStore:
        if self.store is None:
            raise CompileError(f"{self.name}: constructed without a weight store (pass "
                               f"store=...; esact_cc.pipeline and esact-opt do)")
        return self.store

    def spec(self, *, include_default: bool = False) -> ArgSpec:
        """The textual form (`quantize{...}`): the store is data, not an option."""
        spec = super().spec(include_default=include_default)
        options = {k: v for k, v in spec.parameters.items() if k != STORE_FIELD}
        return ArgSpec(spec.name, options)


def has_store_field(module_pass: ModulePass) -> bool:
    return any(f.name == STORE_FIELD for f in dataclasses.fields(module_pass))


def with_store(module_pass: ModulePass, store: WeightStore) -> ModulePass:
    """`module_pass` constructed with `store`, if it has a store field and none yet."""
    if has_store_field(module_pass) and getattr(module_pass, STORE_FIELD) is None:
        return dataclasses.replace(module_pass, **{STORE_FIELD: store})
    return module_pass


def with_store_all(passes: Iterable[ModulePass], store: WeightStore) -> list[ModulePass]:
    return [with_store(p, store) for p in passes]
