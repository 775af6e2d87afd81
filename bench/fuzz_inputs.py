"""Fuzz the user-facing inputs: mutated ONNX models through esact-cc, mutated .esb binaries
through esact-run; count how every run ended.

    python bench/fuzz_inputs.py [--models N] [--binaries M] [--quick] [--process-sample K]
                                [--seed S] [--jobs 2] [--out bench/results/fuzz_inputs.json]
    python bench/fuzz_inputs.py --replay KIND:INDEX [--seed S] --replay-dir DIR

Sources: the committed real exports (test/fixtures/models/*.onnx) and the bundled digits ViT;
the base binaries are those models compiled to .esb with the project's API (dense and SPLS),
run on the fixtures' recorded inputs. Mutations: bench/fuzz_mutate_onnx.py and
bench/fuzz_mutate_esb.py; a case's setup and classification: bench/fuzz_case.py.

How cases run (a whole process costs ~1-3 s of imports, too slow for 100k binaries):
- all N + M cases in-process: `--jobs` driver processes (each under an address-space rlimit)
  call the console scripts' own `main(argv)` with fds 1/2 captured; the parent kills a driver
  that exceeds the timeout (a hang) and restarts one that dies (a crash, with its signal);
- a sample of K cases of each kind again as real processes (`esact-cc` / `esact-run` under the
  same rlimit and a timeout), to check that the in-process outcome is what a user would see
  (the JSON counts agreements).

Outcomes: ok, clean_error (exactly one `error:` line, no traceback), unclean_error, traceback,
hang, crash; and, across all of them, reads outside the model's directory (the sentinel's
marker found in any output; see fuzz_case.py). The JSON summary holds the counts per kind
and runner, up to 5 reproducers per failure class, and exactly what was run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_case import CLASSES, Corpus, Outcome, outcome_of, prepare, run_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "test" / "fixtures" / "models"
DIGITS = ROOT / "esact_cc" / "models" / "digits_vit.onnx"
FAILURES = ("unclean_error", "traceback", "hang", "crash", "leak", "setup_error")
REPRODUCERS_PER_CLASS = 5
DRIVER_RESTART_EVERY = 2000
"""Cases per driver process before a fresh one (bounds what a long run accumulates)."""


def build_corpus(folder: Path) -> Corpus:
    """The source models, and every one compiled to a dense and an SPLS binary."""
    import contextlib
    import io

    import numpy as np

    from esact_cc import api

    models = [str(p) for p in sorted(FIXTURES.glob("*.onnx"))] + [str(DIGITS)]
    binaries = []
    for model in models:
        stem = Path(model).stem
        recorded = FIXTURES / f"{stem}.inputs.npz"
        for sparsity in ("dense", "spls"):
            with contextlib.redirect_stderr(io.StringIO()):  # the no-calibration warning
                compiled = api.compile(model, stage="esb", sparsity=sparsity)
            esb = folder / f"{stem}-{sparsity}.esb"
            compiled.save_esb(esb)
            program = compiled.program()
            inputs = {}
            for desc in program.inputs:
                npy = folder / f"{stem}.{desc.name}.npy"
                if recorded.exists():
                    value = np.load(recorded)[desc.name]
                else:
                    value = np.random.default_rng(0).standard_normal(desc.shape)
                np.save(npy, value.astype(desc.dtype))
                inputs[desc.name] = str(npy)
            binaries.append({"name": esb.stem, "esb": str(esb), "inputs": inputs})
    return Corpus(models, binaries)


class Driver:
    """One in-process runner (fuzz_case.run_driver) and the case it is working on."""

    def __init__(self, corpus_path: Path, seed: int, root: Path, memory: int):
        self.command = [sys.executable, str(Path(__file__).parent / "fuzz_case.py"),
                        str(corpus_path), str(seed), str(root), str(memory)]
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.served = 0

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        # The driver's own stderr (not the cases'): where a harness failure would show.
        with open(self.root / "driver.log", "ab") as log:
            return subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def run(self, kind: str, index: int, timeout: float) -> Outcome | tuple[int | None, str]:
        """The outcome, or (returncode, reason) when the driver hung (None) or died."""
        if self.proc is None or self.served >= DRIVER_RESTART_EVERY:
            self.stop()
            self.proc, self.served = self._start(), 0
        self.served += 1
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {index}\n".encode())
        self.proc.stdin.flush()
        # First case of a fresh driver includes its imports.
        ready, _, _ = select.select([self.proc.stdout], [], [],
                                    timeout + (30 if self.served == 1 else 0))
        line = self.proc.stdout.readline() if ready else b""
        if line:
            return Outcome(**json.loads(line))
        if not ready:  # still working: a hang
            self.stop()
            return None, "timeout"
        returncode = self.proc.wait()
        self.proc = None
        return returncode, "driver died"


def _lost_case(kind: str, index: int, seed: int, corpus: Corpus, root: Path,
               returncode: int | None, seconds: float) -> Outcome:
    """The outcome of a case whose driver hung (None) or died: a hang, or a crash with the
    signal or exit status. The case is prepared again only to describe it; the leak check
    reads what the killed driver left in its own case directory."""
    left = root / f"{kind}-{index}"
    again = root / f"{kind}-{index}-described"
    case = prepare(kind, index, seed, corpus, again)
    shutil.rmtree(again, ignore_errors=True)
    outcome = outcome_of(case, left, None, "", _text(left / "stderr.txt"), seconds)
    shutil.rmtree(left, ignore_errors=True)
    if returncode is not None:
        outcome.outcome, outcome.returncode = "crash", returncode
        outcome.error_line = (f"signal {-returncode}" if returncode < 0
                              else f"the process exited with {returncode} mid-case")
    return outcome


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def run_in_process(cases: list[tuple[str, int]], corpus: Corpus, corpus_path: Path, seed: int,
                   jobs: int, timeout: float, memory: int, root: Path) -> list[Outcome]:
    todo: queue.Queue = queue.Queue()
    for case in cases:
        todo.put(case)
    results: list[Outcome] = []
    lock = threading.Lock()
    started = time.monotonic()

    def worker(slot: int) -> None:
        folder = root / f"driver{slot}"
        folder.mkdir()
        driver = Driver(corpus_path, seed, folder, memory)
        try:
            while True:
                try:
                    kind, index = todo.get_nowait()
                except queue.Empty:
                    return
                start = time.monotonic()
                result = driver.run(kind, index, timeout)
                if not isinstance(result, Outcome):
                    result = _lost_case(kind, index, seed, corpus, folder, result[0],
                                        time.monotonic() - start)
                with lock:
                    results.append(result)
                    done = len(results)
                    if done % max(1, len(cases) // 20) == 0 or done == len(cases):
                        print(f"fuzz: {done}/{len(cases)} in-process cases "
                              f"({time.monotonic() - started:.0f} s)", file=sys.stderr,
                              flush=True)
        finally:
            driver.stop()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results, key=lambda r: (r.kind, r.index))


def run_as_processes(cases: list[tuple[str, int]], corpus: Corpus, seed: int, jobs: int,
                     timeout: float, memory: int, root: Path) -> list[Outcome]:
    from concurrent.futures import ThreadPoolExecutor

    def one(case: tuple[str, int]) -> Outcome:
        work = root / f"proc-{case[0]}-{case[1]}"
        try:
            spec = prepare(case[0], case[1], seed, corpus, work)
        except Exception:  # noqa: BLE001 - a harness bug, reported as such
            return Outcome(case[0], case[1], "setup_error", False, None, 0.0,
                           stderr_tail=traceback.format_exc()[-1500:])
        start = time.monotonic()
        returncode, stdout, stderr = run_process(spec, work, timeout, memory)
        outcome = outcome_of(spec, work, returncode, stdout, stderr, time.monotonic() - start)
        shutil.rmtree(work, ignore_errors=True)
        return outcome

    with ThreadPoolExecutor(jobs) as pool:
        return sorted(pool.map(one, cases), key=lambda r: (r.kind, r.index))


def _counts(outcomes: list[Outcome]) -> dict:
    by_kind: dict[str, dict] = {}
    for kind in sorted({o.kind for o in outcomes}):
        mine = [o for o in outcomes if o.kind == kind]
        counter = Counter(o.outcome for o in mine)
        by_kind[kind] = {"cases": len(mine), **{c: counter.get(c, 0) for c in CLASSES},
                         "reads_outside_model_dir": sum(o.leak for o in mine),
                         "seconds_total": round(sum(o.seconds for o in mine), 1)}
    return by_kind


def _reproducers(outcomes: list[Outcome], runner: str, seed: int) -> dict[str, list[dict]]:
    table: dict[str, list[dict]] = {}
    for outcome in outcomes:
        classes = [outcome.outcome] + (["leak"] if outcome.leak else [])
        for cls in classes:
            if cls not in FAILURES:
                continue
            bucket = table.setdefault(cls, [])
            if len(bucket) < REPRODUCERS_PER_CLASS:
                case = outcome.case or {"seed": None, "source": None, "changes": [],
                                        "tool": "(not run)", "argv": []}
                bucket.append({
                    "runner": runner, "kind": outcome.kind, "index": outcome.index,
                    "seed": case["seed"], "source": case["source"], "changes": case["changes"],
                    "command": f"cd <case>/run && {case['tool']} {' '.join(case['argv'])}",
                    "replay": f"python bench/fuzz_inputs.py --replay {outcome.kind}:"
                              f"{outcome.index} --seed {seed} --replay-dir DIR",
                    "returncode": outcome.returncode, "error_line": outcome.error_line,
                    "stderr_tail": outcome.stderr_tail[-600:]})
    return table


def _tested_code() -> str:
    """Which esact_cc the drivers and processes import (PYTHONPATH can point at a snapshot),
    and the repository's commit."""
    import esact_cc

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return f"esact_cc from {Path(esact_cc.__file__).parent}; {ROOT} at {commit or '?'}"


def _merge(first: dict[str, list], second: dict[str, list]) -> dict[str, list]:
    return {cls: (first.get(cls, []) + second.get(cls, []))[:REPRODUCERS_PER_CLASS]
            for cls in sorted(set(first) | set(second))}


def _error_lines(outcomes: list[Outcome], top: int = 15) -> dict[str, list[list]]:
    """Per kind, the most frequent clean error lines (digits blanked): what the checks catch."""
    import re

    table = {}
    for kind in sorted({o.kind for o in outcomes}):
        counter = Counter(re.sub(r"\d+", "N", o.error_line)[:160] for o in outcomes
                          if o.outcome == "clean_error" and o.kind == kind)
        table[kind] = [[line, n] for line, n in counter.most_common(top)]
    return table


def _sample(count: int, total: int) -> list[int]:
    if count >= total or count <= 0:
        return list(range(total if count > 0 else 0))
    step = total / count
    return sorted({int(i * step) for i in range(count)})


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10_000, help="mutated ONNX models (N)")
    parser.add_argument("--binaries", type=int, default=100_000, help="mutated binaries (M)")
    parser.add_argument("--quick", action="store_true",
                        help="N=100, M=400, process sample 10 (a few minutes)")
    parser.add_argument("--process-sample", type=int, default=50,
                        help="cases of each kind also run as real processes (K)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space cap")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "fuzz_inputs.json")
    parser.add_argument("--replay", metavar="KIND:INDEX",
                        help="write one case's files to --replay-dir and print its command")
    parser.add_argument("--replay-dir", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.models, args.binaries, args.process_sample = 100, 400, 10
    return args


def _replay(args: argparse.Namespace, corpus: Corpus) -> None:
    if args.replay_dir is None:
        raise SystemExit("--replay needs --replay-dir DIR")
    kind, index = args.replay.split(":")
    case = prepare(kind, int(index), args.seed, corpus, args.replay_dir)
    print("\n".join(case.changes))
    print(f"cd {args.replay_dir / 'run'} && {case.tool} {' '.join(case.argv)}")


def main() -> None:
    args = _arguments()
    tested_code = _tested_code()  # now: the repository may move on during a long run
    memory = int(args.memory_gb * (1 << 30))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="esact-fuzz-") as tmp:
        root = Path(tmp)
        corpus = build_corpus(root)
        corpus_path = root / "corpus.json"
        corpus_path.write_text(json.dumps(asdict(corpus)))
        if args.replay:
            _replay(args, corpus)
            return
        cases = [("model", i) for i in range(args.models)] + \
                [("binary", i) for i in range(args.binaries)]
        in_process = run_in_process(cases, corpus, corpus_path, args.seed, args.jobs,
                                    args.timeout, memory, root)
        sampled = [("model", i) for i in _sample(args.process_sample, args.models)] + \
                  [("binary", i) for i in _sample(args.process_sample, args.binaries)]
        processes = run_as_processes(sampled, corpus, args.seed, args.jobs, args.timeout * 2,
                                     memory, root)
    by_case = {(o.kind, o.index): o for o in in_process}
    agree = sum(by_case[(o.kind, o.index)].outcome == o.outcome
                and by_case[(o.kind, o.index)].leak == o.leak for o in processes)
    disagreements = [[o.kind, o.index, by_case[(o.kind, o.index)].outcome, o.outcome]
                     for o in processes if by_case[(o.kind, o.index)].outcome != o.outcome]
    summary = {
        "command": " ".join(["python", *sys.argv]),
        "seed": args.seed,
        "how": {
            "in_process": f"{args.models} model + {args.binaries} binary cases, {args.jobs} "
                          "driver processes calling esact_cc.cli.esact_cc_main.main / "
                          "esact_cc.runtime.cli.esact_run_main.main with fds 1/2 captured, "
                          f"RLIMIT_AS {args.memory_gb} GiB, {args.timeout} s per case",
            "processes": f"{len(sampled)} of those cases again as esact-cc / esact-run "
                         f"processes, RLIMIT_AS {args.memory_gb} GiB, {args.timeout * 2} s",
            "tested_code": tested_code,
            "sources": [str(Path(m).relative_to(ROOT)) for m in corpus.models],
            "base_binaries": [b["name"] for b in corpus.binaries],
        },
        "in_process": _counts(in_process),
        "processes": _counts(processes),
        "process_agreement": {"same_outcome_and_leak": agree, "of": len(processes),
                              "disagreements": disagreements[:20]},
        "reproducers": _merge(_reproducers(in_process, "in_process", args.seed),
                              _reproducers(processes, "process", args.seed)),
        "top_clean_errors": _error_lines(in_process),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    from esact_cc.runtime.atomic_write import atomic_write_bytes

    atomic_write_bytes(args.out, (json.dumps(summary, indent=1) + "\n").encode())
    print(json.dumps({"in_process": summary["in_process"], "processes": summary["processes"],
                      "process_agreement": summary["process_agreement"]}, indent=1))


if __name__ == "__main__":
    main()
