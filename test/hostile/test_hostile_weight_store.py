"""Hostile weight stores named by an IR file's `esact.weight_store`, run through esact-opt.

`esact-opt in.mlir -o sub/out.mlir` copies the store beside its output, so a reference that
escaped the IR file's directory would copy any file into the outputs, and a zip bomb would
fill memory and disk. Each test writes the IR and the archive in tmp_path (archives built
member by member with zipfile, some with forged headers) and checks: one `esact-opt: error:`
line naming the store, and nothing written.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.weight_store_archive import MAX_EXPANSION, MAX_WEIGHT_STORE_BYTES

SECRET = b"a secret beside the IR directory, never to be copied\n"


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes],
              compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def ir_naming(directory: Path, reference: str) -> Path:
    path = directory / "in.mlir"
    path.write_text(f'builtin.module attributes {{esact.weight_store = "{reference}"}} {{}}\n')
    return path


@pytest.fixture
def ir_dir(tmp_path) -> Path:
    """tmp_path/ir holds the IR; tmp_path/outside/secret.npz is a valid store it must not use."""
    (tmp_path / "ir" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    write_zip(tmp_path / "outside" / "secret.npz",
              {"secret.npy": npy_bytes(np.frombuffer(SECRET, np.uint8))})
    return tmp_path / "ir"


def opt_copy(ir_dir: Path):
    return run_tool("esact-opt", "in.mlir", "-o", "sub/out.mlir", cwd=ir_dir)


def assert_refused(ir_dir: Path, *needles: str) -> str:
    before = tree_state(ir_dir.parent)
    line = assert_user_error(opt_copy(ir_dir), *needles)
    assert tree_state(ir_dir.parent) == before
    return line


def test_a_store_inside_the_directory_is_copied_beside_the_output(ir_dir):
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_zip(ir_dir / "w.npz", {"w.npy": npy_bytes(weights)})
    ir_naming(ir_dir, "w.npz")
    result = opt_copy(ir_dir)
    assert result.returncode == 0, result.stderr
    assert 'esact.weight_store = "out.npz"' in (ir_dir / "sub" / "out.mlir").read_text()
    with np.load(ir_dir / "sub" / "out.npz") as copied:
        np.testing.assert_array_equal(copied["w"], weights)


@pytest.mark.parametrize("reference, needle", [
    ("{outside}/secret.npz", "no absolute path"),
    ("../outside/secret.npz", "no '..'"),
    ("sub/../../outside/secret.npz", "no '..'"),
    ("", "not a usable file name"),
])
def test_references_out_of_the_ir_directory_are_refused(ir_dir, reference, needle):
    ir_naming(ir_dir, reference.format(outside=ir_dir.parent / "outside"))
    assert_refused(ir_dir, "esact.weight_store", needle)


def test_a_symlink_out_of_the_ir_directory_is_refused(ir_dir):
    (ir_dir / "w.npz").symlink_to(ir_dir.parent / "outside" / "secret.npz")
    ir_naming(ir_dir, "w.npz")
    assert_refused(ir_dir, "symlink leads outside")


def test_a_zip_bomb_is_refused_before_it_is_expanded(ir_dir):
    # 200 MB of zeros deflate to 0.2 MB: 1000x, far beyond what real weights compress.
    with zipfile.ZipFile(ir_dir / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("w.npy", "w") as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (50_000_000,)})
            zeros = bytes(1 << 24)
            for start in range(0, 200_000_000, len(zeros)):
                member.write(zeros[:min(len(zeros), 200_000_000 - start)])
    assert (ir_dir / "bomb.npz").stat().st_size * MAX_EXPANSION < 200_000_000
    ir_naming(ir_dir, "bomb.npz")
    assert_refused(ir_dir, "bomb.npz", "expand", f"more than {MAX_EXPANSION}x")


def test_a_store_claiming_more_than_the_cap_is_refused_from_its_headers(ir_dir):
    """Two members whose central-directory sizes claim almost 4 GiB each (forged)."""
    path = ir_dir / "huge.npz"
    write_zip(path, {"a.npy": npy_bytes(np.zeros(4, np.float32)),
                     "b.npy": npy_bytes(np.zeros(4, np.float32))})
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:  # central directory entries
        struct.pack_into("<I", data, start + 24, 0xFFFF_FFF0)  # uncompressed size
        start += 4
    path.write_bytes(bytes(data))
    assert 2 * 0xFFFF_FFF0 > MAX_WEIGHT_STORE_BYTES
    ir_naming(ir_dir, "huge.npz")
    assert_refused(ir_dir, "huge.npz", f"more than the {MAX_WEIGHT_STORE_BYTES} bytes")


@pytest.mark.parametrize("members, needle", [
    ({"w.npy": npy_bytes(np.ones(3)), "notes.txt": b"hello"}, "member 'notes.txt' is not a .npy"),
    ({"w.npy": b"not an array at all"}, "member 'w.npy' is not a .npy array"),
    ({"w.npy": npy_bytes(np.array([{"a": 1}], dtype=object))}, "Python objects"),
    ({"w.npy": npy_bytes(np.ones(1000, np.float32))[:-40]}, "declares [1000] float32"),
])
def test_members_that_are_not_plain_arrays_are_refused(ir_dir, members, needle):
    write_zip(ir_dir / "w.npz", members)
    ir_naming(ir_dir, "w.npz")
    assert_refused(ir_dir, "w.npz", needle)


@pytest.mark.parametrize("count, needle", [
    (64, "member 'w.npy' is corrupt"),  # read whole with its header: found by the check
    (1 << 16, "cannot read weight 'w'"),  # found when the tensor is read
])
def test_a_bad_crc_is_one_line(ir_dir, count, needle):
    path = ir_dir / "w.npz"
    write_zip(path, {"w.npy": npy_bytes(np.arange(count, dtype=np.float32))})
    data = bytearray(path.read_bytes())
    data[data.find(b"PK\x01\x02") - 1] ^= 0xFF  # the member's last data byte
    path.write_bytes(bytes(data))
    ir_naming(ir_dir, "w.npz")
    assert_refused(ir_dir, "w.npz", needle, "Bad CRC-32")


def test_a_fifo_as_store_is_refused_without_blocking(ir_dir):
    os.mkfifo(ir_dir / "w.npz")
    ir_naming(ir_dir, "w.npz")
    assert_refused(ir_dir, "w.npz", "not a regular file")


def test_an_ir_output_named_like_its_store_is_refused(ir_dir):
    write_zip(ir_dir / "w.npz", {"w.npy": npy_bytes(np.ones(3, np.float32))})
    ir_naming(ir_dir, "w.npz")
    before = tree_state(ir_dir.parent)
    result = run_tool("esact-opt", "in.mlir", "-o", "sub/out.npz", cwd=ir_dir)
    assert_user_error(result, "'sub/out.npz' is where its weight store would go")
    assert tree_state(ir_dir.parent) == before


def test_split_input_chunks_with_weights_do_not_share_one_store(ir_dir):
    """One .npz goes beside -o: a second chunk with weights would silently replace the first's."""
    write_zip(ir_dir / "w.npz", {"w.npy": npy_bytes(np.ones(3, np.float32))})
    chunk = 'builtin.module attributes {esact.weight_store = "w.npz"} {}\n'
    (ir_dir / "in.mlir").write_text(chunk + "// -----\n" + chunk)
    before = tree_state(ir_dir.parent)
    result = run_tool("esact-opt", "in.mlir", "--split-input-file", "-o", "sub/out.mlir",
                      cwd=ir_dir)
    assert_user_error(result, "more than one chunk of the split input has weights")
    assert tree_state(ir_dir.parent) == before
