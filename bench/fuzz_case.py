"""One fuzz case of bench/fuzz_inputs.py: set it up, run it, classify how it ended.

A case is (kind, index) under a seed: `model` cases mutate an ONNX model and compile it with
`esact-cc`, `binary` cases mutate an .esb and run it with `esact-run`. Everything about a case
derives from `random.Random(f"{seed}:{kind}:{index}")`, so a case is reproduced from its three
numbers (`python bench/fuzz_inputs.py --replay KIND:INDEX --seed S`).

Directory of a case (`work`):

    work/secret.txt, work/run/secret.txt   the sentinel: a unique marker, over and over
    work/run/                              the tool's working directory
    work/run/model/                        the mutated model or binary (+ files it points at)
    work/run/inputs/, work/run/out/        binary inputs; every output the tool writes

A run "read outside the model's directory" when the marker shows up in its stdout, stderr or
any file it wrote (the sentinel sits outside `model/`, and external data / host models that
point at it copy its bytes into the IR weights, the binary or the outputs).

`run_driver` is the in-process runner: it reads `kind index` lines on stdin and calls the
same `main(argv)` as the console scripts with fds 1 and 2 redirected to files, writing one
JSON result line per case to its original stdout; the parent kills it on a timeout and
restarts it after a crash.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz_mutate_esb import mutate_binary
from fuzz_mutate_onnx import mutate_model, secret_bytes

CLASSES = ("ok", "clean_error", "unclean_error", "traceback", "hang", "crash", "setup_error")
"""How a run ended. unclean_error: failed without a traceback but not with exactly one
`error:` line; traceback: Python traceback or the internal-error exit code 70; setup_error: a
bug of the fuzz harness itself (the mutator failed; the tool never ran)."""
EXIT_INTERNAL_ERROR = 70


@dataclass
class Case:
    kind: str
    index: int
    seed: int
    source: str
    tool: str
    argv: list[str]
    changes: list[str]
    marker: str


@dataclass
class Outcome:
    kind: str
    index: int
    outcome: str
    leak: bool
    returncode: int | None
    seconds: float
    error_line: str = ""
    stderr_tail: str = ""
    case: dict = field(default_factory=dict)


@dataclass
class Corpus:
    """The unmutated inputs: ONNX models, and base binaries with their input files."""

    models: list[str]
    binaries: list[dict]
    """Each {"name", "esb": path, "inputs": {input name: .npy path}}."""

    @staticmethod
    def load(path: Path) -> Corpus:
        return Corpus(**json.loads(path.read_text()))


def prepare(kind: str, index: int, seed: int, corpus: Corpus, work: Path) -> Case:
    """Write the case's files under `work` and return how to run it."""
    rng = random.Random(f"{seed}:{kind}:{index}")
    marker = f"ESACT-FUZZ-SECRET-{rng.getrandbits(64):016x}"
    run = work / "run"
    for folder in (run / "model", run / "out", run / "inputs"):
        folder.mkdir(parents=True)
    sentinel = secret_bytes(marker.encode())
    for path in (work / "secret.txt", run / "secret.txt"):
        path.write_bytes(sentinel)
    secret = run / "secret.txt"
    if kind == "model":
        import onnx

        source = rng.choice(corpus.models)
        model, files, changes = mutate_model(onnx.load(source), rng, secret)
        (run / "model" / "model.onnx").write_bytes(model.SerializeToString())
        files.write(run / "model")
        # External data is easiest to see at the onnx stage: weights go raw into the .npz.
        if any(change.startswith("external") for change in changes):
            argv = ["model/model.onnx", "--compile-to", "onnx", "-o", "out/model.mlir"]
        else:
            argv = ["model/model.onnx", "-o", "out/model.esb"]
        return Case(kind, index, seed, source, "esact-cc", argv, changes, marker)
    base = rng.choice(corpus.binaries)
    data, changes = mutate_binary(Path(base["esb"]).read_bytes(), rng, secret)
    (run / "model" / "model.esb").write_bytes(data)
    argv = ["model/model.esb", "--output-dir", "out", "--report", "out/report.json"]
    for name, npy in base["inputs"].items():
        shutil.copy(npy, run / "inputs" / Path(npy).name)
        argv += ["--input", f"{name}=inputs/{Path(npy).name}"]
    if rng.random() < 0.5:
        argv.append("--quiet")
    return Case(kind, index, seed, base["name"], "esact-run", argv, changes, marker)


def classify(returncode: int | None, stderr: str) -> tuple[str, str]:
    """(outcome class, the error line if any)."""
    if returncode is None:
        return "hang", ""
    if returncode < 0:
        return "crash", f"signal {-returncode}"
    errors = [line for line in stderr.splitlines() if " error: " in f" {line}"
              or line.startswith("error:")]
    if "Traceback (most recent call last)" in stderr or returncode == EXIT_INTERNAL_ERROR:
        return "traceback", errors[-1] if errors else ""
    if returncode == 0:
        return "ok", ""
    if len(errors) == 1:
        return "clean_error", errors[0]
    return "unclean_error", " | ".join(stderr.strip().splitlines()[-2:])


def leaked(work: Path, marker: str, *texts: str) -> bool:
    """The marker is in any of `texts` or in a regular file under work/run, but for the
    sentinel and the case's inputs in run/model/ (the tools write to run/out/)."""
    needle = marker.encode()
    if any(marker in text for text in texts):
        return True
    inputs = work / "run" / "model"
    for path in (work / "run").rglob("*"):
        if path.name == "secret.txt" or path.is_symlink() or not path.is_file():
            continue
        if inputs in path.parents:
            continue
        with open(path, "rb") as handle:
            if needle in handle.read():
                return True
    return False


def outcome_of(case: Case, work: Path, returncode: int | None, stdout: str, stderr: str,
               seconds: float) -> Outcome:
    outcome, line = classify(returncode, stderr)
    return Outcome(case.kind, case.index, outcome, leaked(work, case.marker, stdout, stderr),
                   returncode, round(seconds, 3), line[:300], stderr[-1500:], asdict(case))


def tool_main(tool: str):  # -> Callable[[list[str]], int]
    if tool == "esact-cc":
        from esact_cc.cli.esact_cc_main import main
    else:
        from esact_cc.runtime.cli.esact_run_main import main
    return main


def _call_main(tool: str, argv: list[str], err_fd: int) -> int:
    try:
        return tool_main(tool)(argv) or 0
    except SystemExit as exc:  # argparse; SystemExit(None) is success, a message is not
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - escaped the tool's own error handling: a bug
        os.write(err_fd, traceback.format_exc().encode())
        return EXIT_INTERNAL_ERROR


def run_in_process(case: Case, work: Path) -> tuple[int, str, str]:
    """Call the tool's main in this process, in work/run, with fds 1 and 2 captured."""
    out_path, err_path = work / "stdout.txt", work / "stderr.txt"
    saved = os.dup(1), os.dup(2), os.getcwd()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            os.chdir(work / "run")
            returncode = _call_main(case.tool, case.argv, 2)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.chdir(saved[2])
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return (returncode, out_path.read_text(errors="replace"),
            err_path.read_text(errors="replace"))


def run_process(case: Case, work: Path, timeout: float, memory_bytes: int
                ) -> tuple[int | None, str, str]:
    """Run the installed console script on the case, as a user would."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    exe = shutil.which(case.tool)
    assert exe is not None, f"{case.tool} is not installed (pip install -e .)"
    try:
        proc = subprocess.run([exe, *case.argv], cwd=work / "run", capture_output=True,
                              timeout=timeout, preexec_fn=cap, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stdout or b"").decode(errors="replace"), \
            (exc.stderr or b"").decode(errors="replace")
    return proc.returncode, proc.stdout.decode(errors="replace"), \
        proc.stderr.decode(errors="replace")


def run_driver(corpus_path: str, seed: int, root: str, memory_bytes: int) -> None:
    """The in-process runner's loop (see the module docstring)."""
    import resource
    import time

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    corpus = Corpus.load(Path(corpus_path))
    results = os.fdopen(os.dup(1), "w")
    tool_main("esact-cc"), tool_main("esact-run")  # import before the first timed case
    for line in sys.stdin:
        kind, index = line.split()
        work = Path(root) / f"{kind}-{index}"
        try:
            case = prepare(kind, int(index), seed, corpus, work)
        except Exception:  # noqa: BLE001 - a harness bug: reported, never counted as the tool's
            outcome = Outcome(kind, int(index), "setup_error", False, None, 0.0,
                              stderr_tail=traceback.format_exc()[-1500:])
        else:
            start = time.perf_counter()
            returncode, stdout, stderr = run_in_process(case, work)
            outcome = outcome_of(case, work, returncode, stdout, stderr,
                                 time.perf_counter() - start)
        shutil.rmtree(work, ignore_errors=True)
        results.write(json.dumps(asdict(outcome)) + "\n")
        results.flush()


if __name__ == "__main__":
    run_driver(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
