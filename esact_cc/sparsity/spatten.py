"""`--sparsity spatten`: SpAtten's cascade token and head pruning per layer (Wang et al., HPCA
2021; passes/insert_spatten.py). Its options are `insert_spatten.SpattenOptions` (token_keep,
head_keep, requant_threshold, each per layer); its instructions (SPATTEN_TOPK, SPATTEN_SCORE)
are registered by runtime/isa_spatten.py and lowered by passes/lower_spatten.py."""

from xdsl.passes import ModulePass

from esact_cc.passes.insert_spatten import InsertSpattenPass, SpattenOptions
from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    return [InsertSpattenPass(**settings.pass_options())]


SCHEME = SparsityScheme("spatten", "SpAtten: cascade token and head pruning by accumulated "
                        "attention, top-k engine, progressive quantization", SpattenOptions,
                        _passes)
