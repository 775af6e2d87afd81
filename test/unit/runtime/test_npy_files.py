"""runtime/npy_files: arrays read header first give what np.load gives, and nothing else."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.npy_files import read_npy_file, read_npz_bytes

CAP = 1 << 20


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
    np.array(7, dtype=np.int8),
    np.zeros((0, 5), dtype=np.float64),
    np.array([True, False]),
    np.arange(6, dtype=">i4"),
])
def test_npy_files_read_like_np_load(tmp_path, array: np.ndarray) -> None:
    np.save(tmp_path / "a.npy", array)
    got = read_npy_file(tmp_path / "a.npy", "--input a", CAP)
    expected = np.load(tmp_path / "a.npy")
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    got[...] = 0  # writable, like np.load's result


def test_version_2_headers_are_read(tmp_path) -> None:
    with open(tmp_path / "a.npy", "wb") as handle:
        np.lib.format.write_array(handle, np.arange(3.0), version=(2, 0))
    np.testing.assert_array_equal(read_npy_file(tmp_path / "a.npy", "x", CAP), np.arange(3.0))


def test_the_cap_is_checked_on_the_declared_size(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(1000, np.float64))
    assert read_npy_file(tmp_path / "a.npy", "x", 8000).shape == (1000,)
    with pytest.raises(UsageError, match="array of 8000 bytes, more than the 7999 bytes"):
        read_npy_file(tmp_path / "a.npy", "x", 7999)


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def test_npz_members_are_read_by_name() -> None:
    arrays = read_npz_bytes(npz(a=np.arange(4), b=np.ones((2, 2), np.float32)), "calib", CAP)
    assert sorted(arrays) == ["a", "b"]
    np.testing.assert_array_equal(arrays["b"], np.ones((2, 2), np.float32))


def test_npz_arrays_share_one_cap() -> None:
    data = npz(a=np.zeros(100, np.int8), b=np.zeros(100, np.int8))
    assert len(read_npz_bytes(data, "calib", 200)) == 2
    with pytest.raises(UsageError, match="member 'b.npy': it declares a \\[100\\] int8 array"):
        read_npz_bytes(data, "calib", 199)


def test_npz_member_that_is_not_npy_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(UsageError, match="member 'notes.txt' is not a .npy array"):
        read_npz_bytes(out.getvalue(), "calib", CAP)


def test_a_deflated_member_expanding_past_its_header_is_refused() -> None:
    """A member whose data is longer than its header declares (a small header in front of a
    large deflated payload) is refused once the declared bytes are read."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|i1", "fortran_order": False,
                                                  "shape": (4,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(1 << 20))
    with pytest.raises(UsageError, match="declares \\[4\\] int8 \\(4 bytes of data\\) but holds"):
        read_npz_bytes(out.getvalue(), "calib", CAP)
