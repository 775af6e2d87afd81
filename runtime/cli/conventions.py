"""What every esact tool's command line shares (README "Command-line conventions").

- `tool_parser(prog, description)`: an argparse parser with `--version` (`prog <version>`);
  argparse's own usage errors print `usage: ...` and `prog: error: ...`, exit 2;
- `CommandLineError` (runtime/errors.py) for a bad option value or combination found after
  parsing: one `prog: error:` line, exit 2 like argparse's (user_errors.exit_code_of); a bad
  input file is a user error, exit 1;
- `-o/--output` names the output file, `-o -` stdout (`is_stdout`);
- diagnostics, timings and IR dumps go to stderr, never into stdout's output.
"""

from __future__ import annotations

import argparse
from functools import cache

STDOUT = "-"
"""`-o -`: the output goes to stdout."""


@cache
def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("esact-cc")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def add_version_argument(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument("--version", action="version", version=f"{prog} {tool_version()}")


def tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_version_argument(parser, prog)
    return parser


def is_stdout(path: str | None) -> bool:
    return path == STDOUT


def write_text_output(path: str, text: str) -> None:
    """`-o PATH`'s text: to stdout for `-`, else atomically to the file."""
    import sys

    from ..atomic_write import atomic_write_text

    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)
