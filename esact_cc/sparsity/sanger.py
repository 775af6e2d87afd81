"""`--sparsity sanger`: Sanger's predicted attention mask per layer (Lu et al., MICRO 2021;
passes/insert_sanger.py). Its options are `insert_sanger.SangerOptions` (bits, threshold, each
per layer). Everything else it brings is registered here, by module: the `sanger` dialect, its
lowering (passes/lower_sanger.py), interpreter semantics, instructions (SANGER_PREDICT,
SANGER_PACK: runtime/isa_sanger.py), config file and esact-tune hook."""

from xdsl.passes import ModulePass

from esact_cc.sparsity.registry import TuningHook, SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    # Imported here: listing the schemes (every tool's start) loads no pass module.
    from esact_cc.passes.insert_sanger import InsertSangerPass

    return [InsertSangerPass(**settings.pass_options())]


SCHEME = SparsityScheme(
    "sanger", "Sanger: low-bit Q K^T prediction, probability threshold, pack-and-split",
    "esact_cc.passes.insert_sanger:SangerOptions", _passes,
    pass_classes={"insert-sanger": "esact_cc.passes.insert_sanger:InsertSangerPass"},
    dialect="esact_cc.dialects.sanger", lowering="esact_cc.passes.lower_sanger",
    interpreter="esact_cc.interpreter.interpret_sanger_ops",
    instructions="esact_cc.runtime.isa_sanger",
    config="esact_cc.sparsity.sanger_options:SangerConfig",
    tuning=TuningHook("esact_cc.tuning.sanger_tuning:SangerEvaluator",
                        "esact_cc.tuning.sanger_tuning:tune_sanger"))
