"""numpy's floating-point RuntimeWarnings as one line each, without source paths.

A tool computing on a user's data may overflow float32 (an input of 1e30 through a layer
norm's square); numpy then prints `/path/to/interpret_onnx_ops.py:248: RuntimeWarning:
overflow encountered in multiply` and the source line, which reads like a crash of the tool.
The results are what the arithmetic gives (inf or NaN, as onnxruntime would), so the tool
goes on, and `numpy_warnings_as_lines` (around every tool's body, runtime/cli/user_errors.py)
counts those warnings instead and ends with one line per kind:
`esact-cc: warning: overflow encountered in multiply (numpy, 1 place); results may hold inf or NaN`.
Other warnings pass through unchanged.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_NUMPY_FLOATING_POINT = re.compile(
    r"(overflow|underflow|divide by zero|invalid value) encountered in \w+")


@contextmanager
def numpy_warnings_as_lines(say: Callable[[str], None]) -> Iterator[None]:
    """Within the block, count numpy floating-point RuntimeWarnings (each location is
    reported once under Python's default filter); after it, `say` one line per message."""
    counts: dict[str, int] = {}
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        text = str(message)
        if issubclass(category, RuntimeWarning) and _NUMPY_FLOATING_POINT.fullmatch(text):
            counts[text] = counts.get(text, 0) + 1
            return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
        for text, count in counts.items():
            places = "1 place" if count == 1 else f"{count} places"
            say(f"warning: {text} (numpy, {places}); results may hold inf or NaN")
