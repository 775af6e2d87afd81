"""The compiled SFU loops (runtime/_sfu_loops.c: GELU's erf form, DEQUANT and QUANT_ROWS in one
pass per element; runtime/_softmax_loops.c: the softmax's passes around numpy's exp), or one
line saying how to build them: like the timing model's event loop, they are built by
installing esact-cc, and a run without them stops instead of falling back."""

from __future__ import annotations

from types import ModuleType

from .errors import InstallError

try:
    from . import _sfu_loops as _compiled
except ImportError as error:  # reported when a kernel needs it
    _compiled: ModuleType | None = None  # type: ignore[no-redef]
    _missing = " ".join(str(error).split())

try:
    from . import _softmax_loops as _compiled_softmax
except ImportError as error:
    _compiled_softmax: ModuleType | None = None  # type: ignore[no-redef]
    _missing_softmax = " ".join(str(error).split())


def compiled_sfu_loops() -> ModuleType:
    if _compiled is None:
        raise InstallError(_install_message(_missing))
    return _compiled


def compiled_softmax_loops() -> ModuleType:
    if _compiled_softmax is None:
        raise InstallError(_install_message(_missing_softmax))
    return _compiled_softmax


def _install_message(missing: str) -> str:
    return (f"the compiled SFU loops are not importable ({missing}); build them by installing "
            f"esact-cc: pip install -e . (needs a C compiler)")
