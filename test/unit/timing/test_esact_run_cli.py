"""esact-run end to end on a hand-assembled binary: outputs, report, trace, analytic cycle
count, and one-line errors (inputs, config mismatch, corrupt and deadlocking binaries)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from esact_cc.runtime import esb
from esact_cc.runtime.cli.esact_run_main import main
from esact_cc.runtime.esb import DataSegment, DebugEntry, IODescriptor, Program, write_esb
from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, Instruction, Queue

CONFIG = load_config()


def M(*queues):
    return sum(1 << int(q) for q in queues)


def gemm_program(config_hash=CONFIG.hash, store_push=None):
    store_push = M(Queue.COMPUTE) if store_push is None else store_push
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (64, 32), dtype=np.int8)
    program = Program(
        instructions=[
            Instruction.make("load", buf=int(Buffer.ABUF), dram_addr=4096, rows=32, cols=64),
            Instruction.make("load", buf=int(Buffer.WBUF), dram_addr=0, rows=64, cols=32,
                             push=M(Queue.COMPUTE)),
            Instruction.make("gemm", m=32, k=64, n=32, pop=M(Queue.LOAD), push=M(Queue.STORE)),
            Instruction.make("store", buf=int(Buffer.ACC), dram_addr=8192, rows=32, cols=32,
                             pop=M(Queue.COMPUTE), push=store_push),
            Instruction.make("halt", pop=M(Queue.STORE)),
        ],
        config_hash=config_hash,
        io=[IODescriptor("x", (32, 64), "int8", 4096, "input"),
            IODescriptor("y", (32, 32), "int32", 8192, "output")],
        data_segments=[DataSegment("w", 0, w.tobytes())],
        debug={2: DebugEntry("/layer.0/attention/self/query/MatMul", 0, "q")},
    )
    return program, w


@pytest.fixture
def binary(tmp_path):
    program, w = gemm_program()
    path = tmp_path / "gemm.esb"
    write_esb(program, path)
    x = np.random.default_rng(1).integers(-127, 128, (32, 64), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    return path, x, w


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expected_cycles():
    # load x (2048 B) and load w (2048 B) in order on the load queue: 100 + 2048/64 each;
    # gemm after the w token (+1): one 32x32 tile, K = 64, + 32 + 32 fill/drain;
    # store 4096 B after the gemm token (+1); halt (1 cycle) after the store token (+1).
    def dma(n):
        return 100 + math.ceil(n / 64)
    return 2 * dma(2048) + 1 + (64 + 64) + 1 + dma(4096) + 1 + 1


def test_run_writes_outputs_report_and_trace(binary, tmp_path, capsys):
    path, x, w = binary
    code, out, err = run_main(
        capsys, path, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out",
        "--report", tmp_path / "r.json", "--trace", tmp_path / "t.json")
    assert code == 0, err
    y = np.load(tmp_path / "out" / "y.npy")
    np.testing.assert_array_equal(y, x.astype(np.int32) @ w.astype(np.int32))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["total"]["cycles"] == expected_cycles()
    assert report["total"]["macs_dense"] == 32 * 64 * 32
    assert report["components"]["q"]["macs_executed"] == 32 * 64 * 32
    assert report["components"]["q"]["layers"]["0"]["cycles"] == 128
    assert report["roofline_cycles"] <= report["total"]["cycles"]
    trace = json.loads((tmp_path / "t.json").read_text())
    names = [e["name"] for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "stall"]
    assert "gemm /layer.0/attention/self/query/MatMul" in names and len(names) == 5
    assert "TOPS/W" in out and "cycles" in out


def test_console_script_runs(binary, tmp_path):
    path, _, _ = binary
    proc = subprocess.run(
        [sys.executable, "-m", "esact_cc.runtime.cli.esact_run_main", str(path), "--input",
         f"x={tmp_path / 'x.npy'}", "--quiet", "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["total"]["cycles"] == expected_cycles()


def assert_one_line_error(code, err, pattern, tmp_path, expected_code=1):
    assert code == expected_code
    assert err.startswith("esact-run: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert pattern in err, err
    assert not (tmp_path / "r.json").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make_input,pattern", [
    (None, "lacks input(s) x"),
    (lambda: np.zeros((32, 63), np.int8), "shape [32, 63]"),
    (lambda: np.zeros((32, 64), np.float32), "dtype float32"),
])
def test_bad_inputs_are_one_line_errors(binary, tmp_path, capsys, make_input, pattern):
    path, _, _ = binary
    args = [path, "--report", tmp_path / "r.json", "--output-dir", tmp_path / "out"]
    if make_input is not None:
        np.save(tmp_path / "bad.npy", make_input())
        args += ["--input", f"x={tmp_path / 'bad.npy'}"]
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, pattern, tmp_path)


def test_unknown_and_unreadable_inputs(binary, tmp_path, capsys):
    path, _, _ = binary
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    for extra, pattern, expected_code in [
            (["--input", f"z={tmp_path / 'x.npy'}"], "no input 'z'", 1),
            (["--input", f"x={tmp_path / 'junk.npy'}"], "cannot read", 1),
            (["--input", f"x={tmp_path / 'nope.npy'}"], "not found", 1),
            (["--input", "x"], "expected FILE.npz, NAME=FILE.npy", 2)]:  # usage: exit 2
        code, _, err = run_main(capsys, path, "--report", tmp_path / "r.json", *extra)
        assert_one_line_error(code, err, pattern, tmp_path, expected_code)


def other_config(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text('name = "wide"\n[mac_array]\nrows = 64\n')  # the rest: the defaults
    return path


def test_config_mismatch_is_refused_unless_forced(binary, tmp_path, capsys):
    path, _, _ = binary
    hw = other_config(tmp_path)
    args = [path, "--input", f"x={tmp_path / 'x.npy'}", "--hw", hw,
            "--report", tmp_path / "r.json", "--output-dir", tmp_path / "out"]
    code, _, err = run_main(capsys, *args)
    assert_one_line_error(code, err, "--force-config", tmp_path)
    code, _, err = run_main(capsys, *args, "--force-config")
    assert code == 0 and "warning:" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["meta"]["forced_config"] is True and report["meta"]["config"] == "wide"
    # 64x32 array: one output tile, K = 64 deep, fill/drain 64 + 32
    assert report["components"]["q"]["cycles"] == 64 + 64 + 32


def test_unknown_hw_name(binary, tmp_path, capsys):
    path, _, _ = binary
    code, _, err = run_main(capsys, path, "--hw", "no-such-config",
                            "--input", f"x={tmp_path / 'x.npy'}")
    assert_one_line_error(code, err, "no-such-config", tmp_path)


def test_corrupt_binary_is_a_one_line_error(binary, tmp_path, capsys):
    path, _, _ = binary
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    bad = tmp_path / "bad.esb"
    bad.write_bytes(bytes(data))
    code, _, err = run_main(capsys, bad, "--input", f"x={tmp_path / 'x.npy'}",
                            "--report", tmp_path / "r.json")
    assert_one_line_error(code, err, "", tmp_path)
    bad.write_bytes(bytes(data[:50]))
    code, _, err = run_main(capsys, bad, "--input", f"x={tmp_path / 'x.npy'}")
    assert_one_line_error(code, err, "", tmp_path)


def test_deadlocking_binary_is_rejected_before_it_runs(tmp_path, capsys, monkeypatch):
    # The halt pops a store token that the store never pushes.
    program, _ = gemm_program(store_push=0)
    monkeypatch.setattr(esb, "validate_program", lambda p: None)  # let the writer emit it
    write_esb(program, tmp_path / "dead.esb")
    monkeypatch.undo()
    np.save(tmp_path / "x.npy", np.zeros((32, 64), np.int8))
    code, _, err = run_main(capsys, tmp_path / "dead.esb", "--input", f"x={tmp_path / 'x.npy'}",
                            "--report", tmp_path / "r.json", "--output-dir", tmp_path / "out")
    assert_one_line_error(code, err, "instruction 4", tmp_path)
    assert "deadlock" in err


def test_without_hw_the_binarys_shipped_config_is_used(tmp_path, capsys):
    from esact_cc.runtime.hw_config import resolve_config

    large = resolve_config("large")
    program, _ = gemm_program(config_hash=large.hash)
    write_esb(program, tmp_path / "large.esb")
    np.save(tmp_path / "x.npy", np.ones((32, 64), np.int8))
    code, _, err = run_main(capsys, tmp_path / "large.esb", "--input", f"x={tmp_path / 'x.npy'}",
                            "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["meta"]["config"] == "esact-large" and report["meta"]["forced_config"] is False
    # 64x64 array, 128 GB/s: gemm = 1 tile x K 64 + 64 + 64
    assert report["components"]["q"]["cycles"] == 64 + 128


def test_report_path_that_is_a_directory_fails_before_running(binary, tmp_path, capsys):
    path, _, _ = binary
    (tmp_path / "r.json").mkdir()
    code, _, err = run_main(capsys, path, "--input", f"x={tmp_path / 'x.npy'}",
                            "--output-dir", tmp_path / "out", "--report", tmp_path / "r.json")
    assert code == 1 and err.startswith("esact-run: error: --report") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_outputs_go_to_new_nested_directories(binary, tmp_path, capsys):
    path, _, _ = binary
    code, _, err = run_main(capsys, path, "--input", f"x={tmp_path / 'x.npy'}", "--quiet",
                            "--output-dir", tmp_path / "a" / "b",
                            "--report", tmp_path / "c" / "r.json")
    assert code == 0, err
    assert (tmp_path / "a" / "b" / "y.npy").exists() and (tmp_path / "c" / "r.json").exists()
