"""How a value read from a user's file appears in a one-line error message."""

from __future__ import annotations

from typing import Any


def short_repr(value: Any, limit: int = 80) -> str:
    """`ascii(value)`, cut to `limit` characters: lone surrogates, control characters and
    non-ASCII text are escaped, so the message prints on any terminal and stays one line."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
