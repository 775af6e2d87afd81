"""The compiled SFU loops (runtime/_sfu_loops.c: GELU's erf form and DEQUANT in one pass per
element), or one line saying how to build them: like the timing model's event loop, they are
built by installing esact-cc, and a run without them stops instead of falling back."""

from __future__ import annotations

from types import ModuleType

from .errors import InstallError

try:
    from . import _sfu_loops as _compiled
except ImportError as error:  # reported when a kernel needs it
    _compiled: ModuleType | None = None  # type: ignore[no-redef]
    _missing = " ".join(str(error).split())


def compiled_sfu_loops() -> ModuleType:
    if _compiled is None:
        raise InstallError(f"the compiled SFU loops are not importable ({_missing}); build "
                           f"them by installing esact-cc: pip install -e . (needs a C compiler)")
    return _compiled
