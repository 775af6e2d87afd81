"""Runs the lit suite (dialect and pass tests) as part of the one pytest command."""

import subprocess
import sys
from pathlib import Path

LIT_DIR = Path(__file__).parent / "lit"


def test_lit_suite() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import lit.main; lit.main.main()", "-q", "-v", str(LIT_DIR)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
