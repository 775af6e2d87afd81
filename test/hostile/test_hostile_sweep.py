"""esact-sweep on hostile specs and output paths: one error line, nothing written."""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

SPEC = '[[models]]\nname = "digits-vit"\n[hardware.axes]\n"sfu.lanes" = [32]\n'


@pytest.mark.parametrize("spec, needle", [
    ("/dev/zero", "sweep spec '/dev/zero' is larger than the 1 MiB limit"),
    (".", "sweep spec '.' is a directory"),
])
def test_special_files_as_the_spec(tmp_path, spec, needle) -> None:
    assert_user_error(run_tool("esact-sweep", spec, "-o", "out", cwd=tmp_path), needle)
    assert tree_state(tmp_path) == {}


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe[[models]]", "is not UTF-8 text (byte 0)"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, "nests arrays or tables too deeply"),
    (b"[[models]]\nname = 'digits-vit'\n[sweep]\ninputs = 'all'", "sweep.inputs: Input should be"),
    (SPEC.encode().replace(b"[32]", b"[32, 1e400]"), "hardware.axes"),
])
def test_malformed_specs(tmp_path, content, needle) -> None:
    (tmp_path / "spec.toml").write_bytes(content)
    before = tree_state(tmp_path)
    assert_user_error(run_tool("esact-sweep", "spec.toml", "-o", "out", cwd=tmp_path), needle)
    assert tree_state(tmp_path) == before


def test_an_output_dir_that_is_a_file(tmp_path) -> None:
    (tmp_path / "spec.toml").write_text(SPEC)
    (tmp_path / "out").write_text("keep")
    before = tree_state(tmp_path)
    assert_user_error(run_tool("esact-sweep", "spec.toml", "-o", "out", cwd=tmp_path), "out")
    assert tree_state(tmp_path) == before


def test_an_unknown_table_format(tmp_path) -> None:
    (tmp_path / "spec.toml").write_text(SPEC)
    assert_user_error(run_tool("esact-sweep", "spec.toml", "-o", "out", "--table", "xlsx",
                               cwd=tmp_path), "--table: unknown format 'xlsx'")
    assert not (tmp_path / "out").exists()
