"""The one place that imports torch for fine-tuning, with the user error when it is missing."""

from __future__ import annotations

from types import ModuleType

from esact_cc.runtime.errors import UsageError

EXTRA = "finetune"


def import_torch() -> ModuleType:
    """torch, or a one-line UsageError naming the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise UsageError(f"fine-tuning needs torch: pip install 'esact-cc[{EXTRA}]' "
                         "(or pip install torch)") from None
    return torch
