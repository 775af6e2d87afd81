"""The same tiny sweep on a local process pool and on a local Ray cluster (2 workers each)
writes identical tables; a missing ray and a bad worker count are one clear error."""

from __future__ import annotations

import sys

import pytest
from sweep_specs import TINY_POINTS, write_spec

from esact_cc.runtime.errors import UsageError
from esact_cc.sweep.runner import run_sweep


def test_local_pool_and_ray_write_identical_tables(tmp_path, tiny_sweep) -> None:
    pytest.importorskip("ray")
    # tiny_sweep: the same spec on a local pool of 2 workers (conftest.py)
    on_ray = run_sweep(write_spec(tmp_path), tmp_path / "ray", workers=2, ray_address="local")
    assert on_ray.ran == TINY_POINTS
    assert (tiny_sweep / "results.csv").read_bytes() == \
        (tmp_path / "ray" / "results.csv").read_bytes()


def test_ray_not_installed_is_one_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UsageError, match=r"--ray needs ray, which is not installed \(pip "
                                         r"install 'esact-cc\[sweep\]'\)"):
        run_sweep(write_spec(tmp_path), tmp_path / "out", ray_address="local")
    assert not (tmp_path / "out").exists()


def test_workers_must_be_positive(tmp_path) -> None:
    with pytest.raises(UsageError, match="--workers must be at least 1, got 0"):
        run_sweep(write_spec(tmp_path), tmp_path / "out", workers=0)
