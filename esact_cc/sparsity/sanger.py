"""`--sparsity sanger`: Sanger's predicted attention mask per layer (Lu et al., MICRO 2021;
passes/insert_sanger.py). Its options are `insert_sanger.SangerOptions` (bits, threshold, each
per layer); its instructions (SANGER_PREDICT, SANGER_PACK) are registered by
runtime/isa_sanger.py and lowered by passes/lower_sanger.py (registered when the pass is
imported)."""

from xdsl.passes import ModulePass

from esact_cc.passes.insert_sanger import InsertSangerPass, SangerOptions
from esact_cc.sparsity.registry import SparsityScheme
from esact_cc.sparsity.settings import SchemeSettings


def _passes(settings: SchemeSettings) -> list[ModulePass]:
    return [InsertSangerPass(**settings.pass_options())]


SCHEME = SparsityScheme("sanger", "Sanger: low-bit Q K^T prediction, probability threshold, "
                        "pack-and-split", SangerOptions, _passes)
