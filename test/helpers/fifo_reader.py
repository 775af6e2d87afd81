"""Drain a FIFO from a thread, so a tool under test can write through it without blocking."""

from __future__ import annotations

import threading
from pathlib import Path


def read_fifo_in_background(fifo: Path) -> tuple[threading.Thread, list[bytes]]:
    """Start a reader of `fifo`; after joining the thread, the list holds what was written."""
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as handle:
            received.append(handle.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, received
