"""The compile cache: a hit is byte-identical and replays the messages; any change misses."""

import os
import shutil
from pathlib import Path

import pytest

from esact_cc.cli.esact_cc_main import main
from esact_cc.compile_cache import MESSAGES_CAP, cache_key, default_cache_dir

FIXTURE = Path(__file__).parents[2] / "fixtures" / "models" / "bert_tiny_legacy17.onnx"


def compile_(tmp_path: Path, output: str, *extra: str) -> None:
    assert main([str(tmp_path / "model.onnx"), "-o", str(tmp_path / output),
                 "--cache-dir", str(tmp_path / "cache"), *extra]) == 0


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return Path(shutil.copy(FIXTURE, tmp_path / "model.onnx"))


def test_hit_is_byte_identical_and_replays_messages(tmp_path: Path, model: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    compile_(tmp_path, "first.esb")
    first_messages = capsys.readouterr().err
    assert len(list((tmp_path / "cache").glob("*.esb"))) == 1
    compile_(tmp_path, "second.esb")
    second_messages = capsys.readouterr().err
    assert (tmp_path / "second.esb").read_bytes() == (tmp_path / "first.esb").read_bytes()
    assert second_messages.startswith(first_messages) and "compile cache hit" in second_messages


def test_a_planted_fifo_or_oversized_entry_is_a_miss(tmp_path: Path, model: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    compile_(tmp_path, "first.esb")
    (messages,) = (tmp_path / "cache").glob("*.stderr")
    capsys.readouterr()
    messages.write_text("x" * (MESSAGES_CAP + 1))  # no compile writes this much
    compile_(tmp_path, "second.esb")
    assert "compile cache hit" not in capsys.readouterr().err
    (binary,) = (tmp_path / "cache").glob("*.esb")
    binary.unlink()
    os.mkfifo(binary)  # opening it would block with no writer: never opened
    compile_(tmp_path, "third.esb")
    assert "compile cache hit" not in capsys.readouterr().err
    assert (tmp_path / "third.esb").read_bytes() == (tmp_path / "first.esb").read_bytes()


def test_changed_options_or_model_miss(tmp_path: Path, model: Path) -> None:
    compile_(tmp_path, "a.esb")
    compile_(tmp_path, "b.esb", "--sparsity", "spls")
    assert len(list((tmp_path / "cache").glob("*.esb"))) == 2
    files = {"MODEL": str(model)}
    before = cache_key({"sparsity": None}, files)
    assert cache_key({"sparsity": "spls"}, files) != before
    model.write_bytes(model.read_bytes() + b"\0")
    assert cache_key({"sparsity": None}, files) != before


def test_output_path_is_not_in_the_key(model: Path) -> None:
    files = {"MODEL": str(model)}
    assert cache_key({"output": "a.esb"}, files) == cache_key({"output": "b.esb"}, files)


def test_no_cache_neither_reads_nor_stores(tmp_path: Path, model: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    compile_(tmp_path, "a.esb", "--no-cache")
    assert not (tmp_path / "cache").exists()
    compile_(tmp_path, "b.esb")
    compile_(tmp_path, "c.esb", "--no-cache")
    assert "compile cache hit" not in capsys.readouterr().err


def test_unwritable_cache_warns_and_still_compiles(tmp_path: Path, model: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cache").write_text("a file, not a directory")
    compile_(tmp_path, "a.esb")
    assert (tmp_path / "a.esb").stat().st_size > 0
    assert "warning: compile cache not written" in capsys.readouterr().err


def test_default_directory_follows_xdg() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/esact-cc")
    assert default_cache_dir({}).name == "esact-cc"
