"""The same tiny sweep on a local process pool and on a local Ray cluster (2 workers each)
writes identical tables."""

from __future__ import annotations

import pytest
from sweep_specs import TINY_POINTS, write_spec

from esact_cc.sweep.runner import run_sweep


def test_local_pool_and_ray_write_identical_tables(tmp_path) -> None:
    pytest.importorskip("ray")
    spec = write_spec(tmp_path)
    local = run_sweep(spec, tmp_path / "local", workers=2)
    on_ray = run_sweep(spec, tmp_path / "ray", workers=2, ray_address="local")
    assert local.ran == on_ray.ran == TINY_POINTS
    assert (tmp_path / "local" / "results.csv").read_bytes() == \
        (tmp_path / "ray" / "results.csv").read_bytes()
