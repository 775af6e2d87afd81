"""Runs the lit suite (dialect and pass tests) as part of the one pytest command.

One pytest item per lit file, so pytest-xdist shares the files between its workers (the whole
suite as one item held one worker for over a minute while the other idled). Each item runs lit
on its file, so lit.cfg.py, its substitutions and its tool checks apply exactly as in
`lit test/lit`.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

LIT_DIR = Path(__file__).parent / "lit"
EXCLUDED_DIRS = {"Inputs"}
"""lit.cfg.py's `config.excludes`: folders of test inputs, not tests."""
LIT_FILES = sorted(path for path in LIT_DIR.rglob("*.mlir")
                   if not EXCLUDED_DIRS & set(path.relative_to(LIT_DIR).parts))


def _lit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import lit.main; lit.main.main()", *args],
                          capture_output=True, text=True)


def test_the_items_are_the_files_lit_runs() -> None:
    listed = _lit("--show-tests", str(LIT_DIR))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    lit_tests = re.findall(r"^  \S+ :: (\S+)$", listed.stdout, re.MULTILINE)
    assert lit_tests, listed.stdout
    assert sorted(lit_tests) == sorted(str(p.relative_to(LIT_DIR)) for p in LIT_FILES)


@pytest.mark.parametrize("lit_file", LIT_FILES, ids=lambda p: str(p.relative_to(LIT_DIR)))
def test_lit_file(lit_file: Path) -> None:
    result = _lit("-q", "-v", "-j1", str(lit_file))
    assert result.returncode == 0, result.stdout + result.stderr
