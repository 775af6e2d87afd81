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


class _VersionAction(argparse.Action):
    """argparse's "version" action with the version looked up only when --version is given:
    importlib.metadata's import and lookup cost every run of a tool ~15 ms CPU (issue 16)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 prog: str = "", help: str = "show program's version number and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.prog = prog

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: str | None = None) -> None:
        import sys

        sys.stdout.write(f"{self.prog} {tool_version()}\n")
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument("--version", action=_VersionAction, prog=prog)


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
