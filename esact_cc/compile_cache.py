"""esact-cc's compile cache: a binary is reused when nothing it depends on changed.

The key is the sha256 of the model's bytes, every other file the compile reads (--hw,
--spls-config, --calibration-data), every command-line option that can change the binary, and
the toolchain itself (its version and the sha256 of its source and shipped config files, so
an edited checkout never reuses a stale binary). An entry is the binary plus the messages the
compile printed on stderr (lift summary, warnings), replayed on a hit, so a hit is
indistinguishable from a compile. Entries live in `--cache-dir`, else
`$XDG_CACHE_HOME/esact-cc`, else `~/.cache/esact-cc`; `--no-cache` bypasses the cache. Only
a plain compile to a binary file is cached: --run, IR dumps and printing, and timing need the
pipeline to run. Writes are atomic (a temporary file renamed), so concurrent compiles are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import esact_cc
from esact_cc.runtime.bounded_read import MiB, read_bounded_text
from esact_cc.runtime.errors import UsageError

MESSAGES_CAP = 1 * MiB
"""A cached compile's messages are its warning lines: anything larger is not one of ours."""

NOT_IN_KEY = frozenset({"output", "cache_dir", "no_cache", "compile_to", "input", "output_dir"})
"""Options that cannot change the binary (where it goes, the cache itself)."""

_TOOLCHAIN_SUFFIXES = (".py", ".toml", ".json")


def default_cache_dir(environment: Mapping[str, str]) -> Path:
    base = environment.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esact-cc"


def toolchain_digest() -> str:
    """esact-cc's version and the content of its sources and shipped configs."""
    digest = hashlib.sha256(esact_cc.__version__.encode())
    roots = sorted({Path(m.__path__[0]).resolve() for m in _packages()})
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in _TOOLCHAIN_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _packages() -> list:
    import esact_cc.dialects
    import esact_cc.passes
    import esact_cc.runtime

    return [esact_cc, esact_cc.dialects, esact_cc.passes, esact_cc.runtime]


def cache_key(options: Mapping[str, object], files: Mapping[str, str | None]) -> str:
    """sha256 of the options (by name), the bytes of each file read (by option) and the
    toolchain."""
    digest = hashlib.sha256(toolchain_digest().encode())
    kept = {name: value for name, value in sorted(options.items()) if name not in NOT_IN_KEY}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
    for option, path in sorted(files.items()):
        digest.update(option.encode() + b"\0")
        if path is not None and Path(path).is_file():  # else a shipped config's name
            with open(path, "rb") as handle:  # streamed: a 415 MB model is not held in memory
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


class CompileCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.esb", self.directory / f"{key}.stderr"

    def lookup(self, key: str) -> tuple[BinaryIO, str] | None:
        """The entry's binary, open (a concurrent store replacing it leaves this one whole),
        and its messages; None on a miss. The caller closes the binary."""
        binary, messages = self._paths(key)
        if not (binary.is_file() and messages.is_file()):  # absent, or a FIFO / device: a miss
            return None
        try:
            text = read_bounded_text(messages, MESSAGES_CAP, "cached compile messages")
            return open(binary, "rb"), text
        except (OSError, UsageError):  # unreadable or oversized: a miss (a store then rewrites it)
            return None

    def store(self, key: str, binary: Path, messages: str) -> None:
        """Copy the binary file into the cache (in chunks: a BERT-base binary is 180 MB).
        Messages first, binary last: an entry whose binary exists is complete."""
        self.directory.mkdir(parents=True, exist_ok=True)
        binary_path, messages_path = self._paths(key)
        for path, copy in ((messages_path, lambda dst: dst.write_bytes(messages.encode())),
                           (binary_path, lambda dst: shutil.copyfile(binary, dst))):
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            copy(temporary)
            os.replace(temporary, path)
