"""Speed and memory where users wait: the tools as whole processes against onnxruntime.

For BERT-base (random weights, TorchScript exporter, opset 17; exported here with torch and
transformers) at each --seq length, under each thread setting (OMP/OPENBLAS/MKL_NUM_THREADS=1,
and the machine's default), this runs as separate processes:

  esact-cc --help           start-up alone
  esact-cc m.onnx -o m.esb  compile, --no-cache (cold: first of the setting; warm: repeated,
                            OS caches hot), and a compile cache hit (compile_cached)
  esact-run m.esb           one inference on the functional + timing model (the compile
                            remembered its host models as checked: runtime/host_model_memo.py),
                            and once more as a first load (an empty cache directory: the
                            loader imports onnx and checks the host models in full)
  onnxruntime               session creation and one inference, timed inside one child process
                            (at a thread count its intra-op pool has that many threads:
                            onnxruntime does not read OMP_NUM_THREADS, and esact-run's own
                            onnxruntime sessions run on 1 thread)

and prints wall time, CPU time (user + system of the child: robust on a loaded machine) and the
child's peak RSS (os.wait4's rusage, per process) next to the ONNX file size, then the targets
of issue 16: compile <= 3x session creation, run <= 2x one inference (in wall and in CPU
seconds), compile peak RSS <= 2x the ONNX file, run <= 1.5x. A compile that fails is reported
with its error line. The tools are the ones `PATH` finds (the JSON records which), so a
launcher of a source snapshot can stand in for the installed ones.

    python bench/bench_cli_processes.py [--seq 128 512] [--threads 1 default] [--repeat 2]
        [--workdir DIR] [--json bench/results/cli_processes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

ORT_CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
if sys.argv[3] != "default":  # onnxruntime's own pool ignores OMP_NUM_THREADS and the like
    options.intra_op_num_threads, options.inter_op_num_threads = int(sys.argv[3]), 1
c0, t0 = time.process_time(), time.perf_counter()
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
c1, t1 = time.process_time(), time.perf_counter()
inputs = dict(np.load(sys.argv[2]))
c2, t2 = time.process_time(), time.perf_counter()
session.run(None, inputs)
c3, t3 = time.process_time(), time.perf_counter()
print(json.dumps({"session_s": t1 - t0, "inference_s": t3 - t2,
                  "session_cpu_s": c1 - c0, "inference_cpu_s": c3 - c2}))
"""


def export_bert(seq: int, directory: Path) -> tuple[Path, Path]:
    """BERT-base at `seq` tokens and its inputs, exported by a child process: a child forked
    from a parent holding torch and the model would report the parent's RSS as its own peak
    (Linux carries the high-water mark across exec)."""
    onnx_path, inputs_path = directory / f"bert_base_{seq}.onnx", directory / f"bert_base_{seq}.npz"
    if not (onnx_path.exists() and inputs_path.exists()):
        subprocess.run([sys.executable, __file__, "--export-only", str(seq), str(onnx_path),
                        str(inputs_path)], check=True)
    return onnx_path, inputs_path


def _export(seq: int, onnx_path: Path, inputs_path: Path) -> None:
    """BERT-base, default random initialisation (seeded), its last_hidden_state, and inputs."""
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    rng = np.random.default_rng(0)
    inputs = {"input_ids": rng.integers(1, 30522, (1, seq), dtype=np.int64),
              "attention_mask": np.ones((1, seq), dtype=np.int64)}
    torch.onnx.export(LastHidden(model), tuple(torch.from_numpy(v) for v in inputs.values()),
                      str(onnx_path), dynamo=False, do_constant_folding=True, opset_version=17,
                      input_names=list(inputs), output_names=["last_hidden_state"])
    np.savez(inputs_path, **inputs)


def thread_environment(threads: str) -> dict[str, str]:
    """The children's environment at `threads`. PYTHONDONTWRITEBYTECODE is dropped: a user's
    installed package has its bytecode written, and without it every measured process would
    compile again each source file edited since, which the timing would charge to the tool."""
    env = {k: v for k, v in os.environ.items()
           if k not in THREAD_VARIABLES and k != "PYTHONDONTWRITEBYTECODE"}
    if threads != "default":
        env |= {name: threads for name in THREAD_VARIABLES}
    return env


def run_process(command: list[str], env: dict[str, str]) -> dict:
    """Wall time, CPU time and peak RSS (MiB) of one child process, its stdout and exit code."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read before waiting: a full pipe would block the child.
    stdout, stderr = child.stdout.read(), child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    last_error = next((line for line in reversed(stderr.decode(errors="replace").splitlines())
                       if line.strip()), "")
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit": child.returncode,
            "stdout": stdout.decode(errors="replace"),
            "error": last_error if child.returncode else ""}


def measure(onnx_path: Path, inputs_path: Path, threads: str, repeat: int, workdir: Path) -> dict:
    env = thread_environment(threads)
    binary = workdir / f"{onnx_path.stem}_{threads}.esb"
    result: dict = {"threads": threads, "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1)}
    result["help"] = _public(run_process(["esact-cc", "--help"], env))
    compiles = [run_process(["esact-cc", str(onnx_path), "-o", str(binary), "--no-cache"], env)
                for _ in range(repeat)]
    result["compile_cold"], result["compile_warm"] = _public(compiles[0]), _public(compiles[-1])
    cached = ["esact-cc", str(onnx_path), "-o", str(binary), "--cache-dir", str(workdir / "cache")]
    if compiles[-1]["exit"] == 0:  # the first fills the cache, the second is a hit
        run_process(cached, env)
        result["compile_cached"] = _public(run_process(cached, env))
    if compiles[-1]["exit"] == 0:
        runs = [run_process(["esact-run", str(binary), "--input", str(inputs_path), "--quiet",
                             "--output-dir", str(workdir / "out")], env) for _ in range(repeat)]
        result["run_cold"], result["run_warm"] = _public(runs[0]), _public(runs[-1])
        # A binary from elsewhere: its host models not yet remembered as checked (an empty
        # cache directory), so the loader imports onnx and checks them in full.
        unremembered = env | {"XDG_CACHE_HOME": tempfile.mkdtemp(prefix="esact_bench_xdg_")}
        result["run_first_load"] = _public(run_process(
            ["esact-run", str(binary), "--input", str(inputs_path), "--quiet",
             "--output-dir", str(workdir / "out")], unremembered))
    ort = run_process([sys.executable, "-c", ORT_CHILD, str(onnx_path), str(inputs_path),
                       threads], env)
    result["onnxruntime"] = _public(ort) | (json.loads(ort["stdout"]) if ort["exit"] == 0 else {})
    return result


def _public(measured: dict) -> dict:
    return {k: v for k, v in measured.items() if k != "stdout"}


def verdict(result: dict) -> list[str]:
    """The issue's targets against this measurement, one line each: time ratios in wall
    seconds and in CPU seconds (a loaded machine stretches wall time; CPU time is what the
    process itself spent, onnxruntime's session and inference timed inside its child)."""
    ort, size = result["onnxruntime"], result["onnx_mib"]
    lines = []
    compile_ = result["compile_warm"]
    if compile_["exit"]:
        return [f"compile FAILED: {compile_['error']}"]
    lines.append(_time_ratio("compile", compile_, "session creation", ort["session_s"],
                             ort["session_cpu_s"], 3))
    run = result.get("run_warm")
    if run is not None and not run["exit"]:
        lines.append(_time_ratio("run", run, "one inference", ort["inference_s"],
                                 ort["inference_cpu_s"], 2))
        mem = run["peak_rss_mib"] / size
        lines.append(f"run peak RSS {run['peak_rss_mib']:.0f} MiB = {mem:.1f}x ONNX "
                     f"(target <= 1.5x: {'met' if mem <= 1.5 else 'NOT met'})")
    elif run is not None:
        lines.append(f"run FAILED: {run['error']}")
    mem = compile_["peak_rss_mib"] / size
    lines.append(f"compile peak RSS {compile_['peak_rss_mib']:.0f} MiB = {mem:.1f}x ONNX "
                 f"{size:.0f} MiB (target <= 2x: {'met' if mem <= 2 else 'NOT met'})")
    return lines


def _time_ratio(step: str, measured: dict, reference: str, wall: float, cpu: float,
                target: float) -> str:
    by_wall, by_cpu = measured["wall_s"] / wall, measured["cpu_s"] / cpu
    return (f"{step} {measured['wall_s']:.2f} s wall = {by_wall:.1f}x {reference} {wall:.2f} s, "
            f"{measured['cpu_s']:.2f} s CPU = {by_cpu:.1f}x its {cpu:.2f} s (target <= "
            f"{target:g}x: {'met' if max(by_wall, by_cpu) <= target else 'NOT met'})")


def print_table(results: list[dict]) -> None:
    print(f"{'seq':>4} {'thr':>7} {'step':<13} {'wall s':>7} {'cpu s':>7} {'RSS MiB':>8}")
    for result in results:
        for step in ("help", "compile_cold", "compile_warm", "compile_cached", "run_cold",
                     "run_warm", "run_first_load", "onnxruntime"):
            if step in result:
                m = result[step]
                print(f"{result['seq']:>4} {result['threads']:>7} {step:<13} {m['wall_s']:>7.2f} "
                      f"{m['cpu_s']:>7.2f} {m['peak_rss_mib']:>8.0f}"
                      + (f"  exit {m['exit']}: {m['error']}" if m["exit"] else ""))
        if result["onnxruntime"]["exit"] == 0:
            ort = result["onnxruntime"]
            print(f"{'':>4} {'':>7} onnxruntime: session {ort['session_s']:.2f} s wall "
                  f"({ort['session_cpu_s']:.2f} s CPU), one inference {ort['inference_s']:.2f} s "
                  f"wall ({ort['inference_cpu_s']:.2f} s CPU)")
        for line in verdict(result):
            print(f"{'':>13}{line}")


def main() -> int:
    if sys.argv[1:2] == ["--export-only"]:
        _export(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--threads", nargs="+", default=["1", "default"])
    parser.add_argument("--repeat", type=int, default=2, help="runs per step (first = cold)")
    parser.add_argument("--workdir", type=Path, help="keep models and binaries here")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="esact_cli_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for seq in args.seq:
        onnx_path, inputs_path = export_bert(seq, workdir)
        for threads in args.threads:
            results.append({"seq": seq} | measure(onnx_path, inputs_path, threads, args.repeat,
                                                  workdir))
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} on {os.cpu_count()} cores")
    print_table(results)
    if args.json:
        tools = {name: shutil.which(name) for name in ("esact-cc", "esact-run")}
        args.json.write_text(json.dumps({"load_average": load, "cpu_count": os.cpu_count(),
                                         "tools": tools, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
