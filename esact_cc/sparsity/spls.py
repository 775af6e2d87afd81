"""`--sparsity spls`: SPLS prediction per layer (passes/insert_spls.py); its options are
`insert_spls.LayerOptions`, its instructions (HLOG, BPU, TOPK, SIMILARITY) are in the ISA table."""

from xdsl.passes import ModulePass

from esact_cc.passes.insert_spls import InsertSplsPass, LayerOptions
from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    return [InsertSplsPass(**settings.pass_options())]


SCHEME = SparsityScheme("spls", "SPLS: HLog attention prediction, row reuse and top-k keys",
                        LayerOptions, _passes)
