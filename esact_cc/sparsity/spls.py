"""`--sparsity spls`: SPLS prediction per layer (passes/insert_spls.py); its options are
`insert_spls.LayerOptions`. SPLS is the accelerator's own scheme: its `spls` dialect, lowering,
interpreter semantics and instructions (HLOG, BPU, TOPK, SIMILARITY) are the core's; its pass
and config file are registered here. esact-tune's default path tunes it
(esact_cc/tuning/spls_tuning.py)."""

from xdsl.passes import ModulePass

from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    # Imported here: listing the schemes (every tool's start) loads no pass module.
    from esact_cc.passes.insert_spls import InsertSplsPass
    from esact_cc.passes.spls_no_reuse import SplsNoReusePass

    # spls-no-reuse: layers whose setting reuses no row keep only what a top-k attention reads
    return [InsertSplsPass(**settings.pass_options()), SplsNoReusePass()]


SCHEME = SparsityScheme(
    "spls", "SPLS: HLog attention prediction, row reuse and top-k keys",
    "esact_cc.passes.insert_spls:LayerOptions", _passes,
    pass_classes={"insert-spls": "esact_cc.passes.insert_spls:InsertSplsPass"},
    config="esact_cc.sparsity.spls_options:SplsConfig")
