"""`--sparsity spatten`: SpAtten's cascade token and head pruning per layer (Wang et al., HPCA
2021; passes/insert_spatten.py). Its options are `insert_spatten.SpattenOptions` (token_keep,
head_keep, requant_threshold, protect, each per layer). Everything else it brings is registered
here, by module: the `spatten` dialect, its lowering (passes/lower_spatten.py), interpreter
semantics, instructions (SPATTEN_TOPK, SPATTEN_SCORE: runtime/isa_spatten.py), config file and
esact-tune hook."""

from xdsl.passes import ModulePass

from esact_cc.sparsity.registry import TuningHook, SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    # Imported here: listing the schemes (every tool's start) loads no pass module.
    from esact_cc.passes.insert_spatten import InsertSpattenPass

    return [InsertSpattenPass(**settings.pass_options())]


SCHEME = SparsityScheme(
    "spatten", "SpAtten: cascade token and head pruning by accumulated attention, top-k engine, "
    "progressive quantization", "esact_cc.passes.insert_spatten:SpattenOptions", _passes,
    pass_classes={"insert-spatten": "esact_cc.passes.insert_spatten:InsertSpattenPass"},
    dialect="esact_cc.dialects.spatten", lowering="esact_cc.passes.lower_spatten",
    interpreter="esact_cc.interpreter.interpret_spatten_ops",
    instructions="esact_cc.runtime.isa_spatten",
    config="esact_cc.sparsity.spatten_options:SpattenConfig",
    tuning=TuningHook("esact_cc.tuning.spatten_tuning:SpattenEvaluator",
                        "esact_cc.tuning.spatten_tuning:tune_spatten"))
