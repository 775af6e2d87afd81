"""exit_code_of: the one error path of every tool, called directly with raising bodies."""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

from esact_cc.runtime.atomic_write import atomic_write
from esact_cc.runtime.cli.user_errors import EXIT_INTERNAL_ERROR, exit_code_of
from esact_cc.runtime.errors import BinaryFormatError


def raising(exc: BaseException):
    def body() -> None:
        raise exc
    return body


@pytest.mark.parametrize("exc, line", [
    (BinaryFormatError("bad magic in\n'x.esb'"), "tool: error: bad magic in 'x.esb'"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "in.onnx"),
     "tool: error: 'in.onnx': No such file or directory"),
    (MemoryError("Unable to allocate 8.00 GiB for an array"),
     "tool: error: out of memory: Unable to allocate 8.00 GiB for an array"),
    (MemoryError(), "tool: error: out of memory"),
    (RecursionError("maximum recursion depth exceeded"),
     "tool: error: input nested too deeply: out of stack (Python recursion limit reached)"),
])
def test_user_errors_are_one_line_and_exit_1(exc, line, capsys):
    assert exit_code_of("tool", raising(exc)) == 1
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_a_real_recursion_is_one_line(capsys):
    def nest(depth: int) -> int:
        return nest(depth + 1)
    assert exit_code_of("tool", lambda: nest(0)) == 1
    assert capsys.readouterr().err.startswith("tool: error: input nested too deeply")


def test_an_internal_bug_keeps_its_traceback_and_asks_for_a_report(capsys):
    def buggy() -> None:
        {}["missing key"]  # noqa: B018 - the bug
    assert exit_code_of("esact-cc", buggy) == EXIT_INTERNAL_ERROR
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "KeyError: 'missing key'" in lines
    assert lines[-1] == ("esact-cc: internal error: this is a bug in esact-cc; please report it "
                         "with the command line and the input files")


def test_library_errors_are_bugs_unless_translated(capsys):
    # A bare ValueError (numpy, json, ...) that reached the top was not turned into an
    # EsactError where the input was read: that is a bug, not a user error.
    assert exit_code_of("tool", raising(ValueError("cannot reshape"))) == EXIT_INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_success_and_explicit_codes():
    assert exit_code_of("tool", lambda: None) == 0
    assert exit_code_of("tool", lambda: 3) == 3


def test_ctrl_c_is_one_line_exit_130(capsys):
    assert exit_code_of("tool", raising(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "tool: error: interrupted\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signals_remove_the_temporary_file(tmp_path, signum, capsys):
    target = tmp_path / "out.esb"
    seen = []

    def write(handle) -> None:
        handle.write(b"partial")
        seen.extend(tmp_path.iterdir())  # the temporary file exists now
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between bytecodes
            np.zeros(1)
        raise AssertionError("the signal did not interrupt the write")

    before = signal.getsignal(signum)
    code = exit_code_of("tool", lambda: atomic_write(target, write))
    assert code == 128 + signum
    assert [p.name for p in seen] and all(p.name.endswith(".tmp") for p in seen)
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == f"tool: error: terminated by {signal.Signals(signum).name}\n"
    assert signal.getsignal(signum) is before  # handlers are the tool run's only

