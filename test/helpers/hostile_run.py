"""Run an esact tool on a hostile input the way a user would, and check how it failed.

Every hostile-input test (test/hostile/) goes through `run_tool` and `assert_user_error`:
the tool runs as a whole process under a memory cap and a wall-clock limit (a bound, not a
timed assertion: a hang or a runaway allocation fails the test instead of the machine), and
must end with exactly one `prog: error: ...` line, exit 1, no traceback, and no file touched
outside the paths the test allows.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MEMORY_CAP_BYTES = 6 << 30
"""Address-space cap for the tool's process (numpy, onnxruntime and xdsl start in < 2 GiB)."""
TIME_LIMIT_S = 120


@dataclass
class ToolResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _cap_memory(cap: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_tool(tool: str, *args: str | os.PathLike[str], cwd: Path, stdin: bytes | None = None,
             memory_cap: bool = True, time_limit: float = TIME_LIMIT_S,
             memory_cap_bytes: int = MEMORY_CAP_BYTES) -> ToolResult:
    """Run `tool` (an installed console script, e.g. "esact-cc") with `args` in `cwd`, its
    address space capped at `memory_cap_bytes` (unless not `memory_cap`)."""
    exe = shutil.which(tool)
    assert exe is not None, f"{tool} is not installed (pip install -e .)"
    argv = [exe, *map(str, args)]
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    limit = _cap_memory(memory_cap_bytes) if memory_cap else None
    proc = subprocess.run(argv, cwd=cwd, input=stdin or b"", capture_output=True, env=env,
                          timeout=time_limit, preexec_fn=limit)
    return ToolResult(argv, proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"))


def assert_user_error(result: ToolResult, *needles: str, code: int = 1) -> str:
    """The run failed as a user error: exit `code`, no traceback, one `prog: error:` line on
    stderr mentioning every needle. Returns that line."""
    prog = Path(result.args[0]).name
    where = f"{' '.join(result.args[1:])}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, f"traceback:\n{where}"
    assert result.returncode == code, f"exit {result.returncode}, expected {code}:\n{where}"
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, f"expected one '{prog}: error:' line:\n{where}"
    for needle in needles:
        assert needle in errors[0], f"'{needle}' not in the error line:\n{where}"
    return errors[0]


def tree_state(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> content digest), to prove nothing was touched."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            state[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            state[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state
