"""The esact-cc command ends without Python's teardown (cli/process_exit.py) and loses
nothing: what it printed or wrote to stdout is all there, atexit handlers run, exit codes and
error lines are main()'s."""

import os
import subprocess
import sys
from pathlib import Path

from esact_cc.bundled_model import MODELS_DIR

MODEL = str(MODELS_DIR / "digits_vit.onnx")
COMMAND = [sys.executable, "-m", "esact_cc.cli.esact_cc_main"]


def test_binary_on_stdout_is_the_file_binary(tmp_path: Path) -> None:
    to_file = subprocess.run([*COMMAND, MODEL, "-o", str(tmp_path / "m.esb"), "--no-cache"],
                             check=False, capture_output=True)
    to_stdout = subprocess.run([*COMMAND, MODEL, "-o", "-", "--no-cache"], check=False,
                               capture_output=True)
    assert to_file.returncode == to_stdout.returncode == 0
    assert to_stdout.stdout == (tmp_path / "m.esb").read_bytes()


def test_error_line_and_exit_code(tmp_path: Path) -> None:
    result = subprocess.run([*COMMAND, str(tmp_path / "missing.onnx"), "-o",
                             str(tmp_path / "m.esb")], check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("esact-cc: error:") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "m.esb").exists()


def test_buffered_output_and_atexit_handlers(tmp_path: Path) -> None:
    marker = tmp_path / "atexit_ran"
    code = ("import atexit, sys; from pathlib import Path\n"
            "from esact_cc.cli.process_exit import exit_without_teardown\n"
            f"atexit.register(Path({str(marker)!r}).write_text, 'yes')\n"
            "sys.stdout.write('buffered ' * 1000); sys.stderr.write('err')\n"
            "exit_without_teardown('esact-cc', 3)\n")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True, env=buffered)
    assert result.returncode == 3
    assert result.stdout == "buffered " * 1000 and result.stderr == "err"
    assert marker.read_text() == "yes"


def test_stdout_closed_by_the_reader() -> None:
    code = ("import sys; from esact_cc.cli.process_exit import exit_without_teardown\n"
            "sys.stdout.write('x' * 1000)\n"  # buffered: written by the final flush
            "sys.stdin.readline()\n"  # until the reader has gone
            "exit_without_teardown('esact-cc', 0)\n")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=buffered)
    child.stdout.close()  # type: ignore[union-attr]  # the reader went away (`| head`)
    child.stdin.write(b"go\n")  # type: ignore[union-attr]
    child.stdin.close()  # type: ignore[union-attr]
    stderr = child.stderr.read()  # type: ignore[union-attr]
    assert child.wait() == 1 and stderr == b""


def test_the_command_never_collects(tmp_path: Path) -> None:
    code = ("import gc, sys; from esact_cc.cli import esact_cc_main as cli\n"
            "gc.callbacks.append(lambda phase, info: sys.stderr.write(f'gc {phase}\\n'))\n"
            f"sys.argv = ['esact-cc', {MODEL!r}, '-o', {str(tmp_path / 'm.esb')!r}, '--no-cache']\n"
            "cli.console_main()\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0 and (tmp_path / "m.esb").stat().st_size > 0
    assert "gc start" not in result.stderr
