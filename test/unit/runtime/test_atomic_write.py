"""atomic_write: files replaced all or nothing, links kept, FIFOs and devices written through."""

from __future__ import annotations

import os
import stat

import pytest

from esact_cc.runtime.atomic_write import atomic_write, atomic_write_bytes, writes_through
from fifo_reader import read_fifo_in_background


def test_a_regular_file_is_replaced_whole(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_ino != inode
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("existing", [True, False])
def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path, existing):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "out.bin"
    if existing:
        real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / "real")) == ["out.bin"]


def test_a_fifo_is_written_through_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert writes_through(fifo)
    thread, received = read_fifo_in_background(fifo)
    atomic_write_bytes(fifo, b"through the pipe")
    thread.join(timeout=10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_a_symlink_to_a_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    thread, received = read_fifo_in_background(fifo)
    atomic_write_bytes(link, b"via link")
    thread.join(timeout=10)
    assert received == [b"via link"] and link.is_symlink()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_errors_name_the_output_not_the_temporary_file(tmp_path):
    target = tmp_path / "a_directory"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as error:
        atomic_write_bytes(target, b"x")
    assert error.value.filename == str(target) and error.value.filename2 is None
    assert os.listdir(tmp_path) == ["a_directory"] and os.listdir(target) == []
