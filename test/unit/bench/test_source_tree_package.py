"""Benches that run other source trees get those trees' compiled timing loop: a package directory
(bench/source_tree_package.py) compiles a tree's C extensions from its own source, and
bench_timing.py --baseline compiles the commit's."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _bench(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_package_dir_runs_the_tree_with_its_own_compiled_loop(tmp_path: Path) -> None:
    where = _bench("source_tree_package").package_dir(ROOT, tmp_path / "package")
    runtime = where / "esact_cc" / "runtime"
    assert not runtime.is_symlink() and (runtime / "timing.py").resolve().parent == ROOT / "runtime"
    probe = ("from esact_cc.runtime import timing, timing_events; "
             "print(timing_events.compiled_loop.__file__); "
             "print(timing.simulate([0, 1], [0, 1], [2, 0], [5, 7]).end)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(where), "PYTHONSAFEPATH": "1"})
    assert proc.returncode == 0, proc.stderr
    built, end = proc.stdout.splitlines()
    assert Path(built).parent == runtime and not Path(built).is_symlink()
    assert end == "[5, 13]"  # 5 cycles, 1 of token latency, 7 cycles


def test_a_tree_without_extensions_is_linked_as_it_is(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for sub in ("esact_cc", "dialects", "passes", "runtime"):
        (tree / sub).mkdir(parents=True)
    (tree / "pyproject.toml").write_text('[tool.setuptools]\npackages = ["esact_cc"]\n')
    where = _bench("source_tree_package").package_dir(tree, tmp_path / "package")
    assert (where / "esact_cc" / "runtime").resolve() == (tree / "runtime").resolve()


def test_baseline_of_head_uses_the_commits_compiled_loop() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no commit to take a baseline from")
    bench = _bench("bench_timing")
    baseline = bench.baseline_timing("HEAD")
    loop = sys.modules["timing_events_baseline"].compiled_loop
    assert Path(loop.__file__).parent != ROOT / "runtime"  # built from HEAD's source
    instructions, works = bench.synthetic_program(200)
    assert bench.measure(instructions, works, 1, baseline)["simulated_cycles"] == (
        bench.measure(instructions, works, 1)["simulated_cycles"])
