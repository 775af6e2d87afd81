"""esact-cc's use of the compile cache (esact_cc/compile_cache.py): which command lines it
serves, the --cache-dir / --no-cache options, and recording the compile's stderr to replay."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from esact_cc.compile_cache import CompileCache, cache_key, default_cache_dir

PIPELINE_OBSERVERS = ("run", "dump_ir_dir", "print_ir_after_all", "print_ir_before",
                      "print_ir_after", "print_ir_tree_dir", "mlir_timing")
"""Options that watch the pipeline run: a compile with any of them is never served."""


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", metavar="DIR", help="compile cache directory (default: "
                        "$XDG_CACHE_HOME/esact-cc, else ~/.cache/esact-cc)")
    parser.add_argument("--no-cache", action="store_true",
                        help="compile even if the cache holds this binary, and do not store it")


def cacheable(args: argparse.Namespace, stage: str, output_is_file: bool) -> bool:
    return (stage == "esb" and output_is_file and not args.no_cache and args.model != "-"
            and not any(getattr(args, name, None) for name in PIPELINE_OBSERVERS))


class _Tee(io.TextIOBase):
    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.stream, self.recorded = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.recorded.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def recorded_stderr() -> Iterator[io.StringIO]:
    tee = _Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):  # type: ignore[type-var]
        yield tee.recorded


def compile_through_cache(prog: str, args: argparse.Namespace, files: Mapping[str, str | None],
                          compile_and_write: Callable[[], None],
                          environment: Mapping[str, str] = os.environ) -> None:
    """Write args.output from the cache, or compile (compile_and_write) and store it."""
    from esact_cc.runtime.atomic_write import atomic_write

    cache = CompileCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(environment))
    key = cache_key(vars(args), files)
    entry = cache.lookup(key)
    if entry is not None:
        binary, messages = entry
        sys.stderr.write(messages)
        with binary:  # copied in chunks, never held whole in memory
            atomic_write(args.output, lambda handle: shutil.copyfileobj(binary, handle))
        sys.stderr.write(f"{prog}: compile cache hit ({cache.directory}); --no-cache "
                         "compiles again\n")
        return
    with recorded_stderr() as messages:
        compile_and_write()
    try:
        cache.store(key, Path(args.output), messages.getvalue())
    except OSError as exc:
        sys.stderr.write(f"{prog}: warning: compile cache not written ({cache.directory}): "
                         f"{exc.strerror or exc}\n")
