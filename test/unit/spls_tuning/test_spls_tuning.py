"""esact-tune and the SPLS options of esact-cc on a tiny post-LN encoder classifier.

The model: test/helpers/encoder_graphs.py's 2-layer BERT-style encoder (padding mask) plus a
mean-pool + MatMul head, 4 classes. Labels are the dense model's own onnxruntime predictions,
so dense accuracy is 100 and every lost point is SPLS's. The search tables are shrunk (the
search logic is what is tested, not the default grid's size).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import encoder_graphs
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from in_process_tool import run_in_process
from esact_cc.runtime.errors import CompileError
from onnx import TensorProto, helper, numpy_helper

from esact_cc import api
from esact_cc.tuning import (
    spls_calibration_inputs,
    spls_measurement,
    spls_memo_interpreter,
    spls_tuning,
)
from esact_cc.cli import esact_tune_main
from esact_cc.interpreter.reference_interpreter import run_module
from esact_cc.tuning.spls_accounting import PREDICTION_MAC_PER_PRODUCT, find_spls_layers
from esact_cc.sparsity.selection import select_scheme
from esact_cc.sparsity.spls_options import SplsConfig
from small_search_tables import use_small_search_tables

SEQ, HIDDEN, HEADS, FFN, LAYERS, CLASSES, VOCAB = 12, 16, 2, 32, 2, 4, 50
ROOT = Path(__file__).resolve().parents[3]


def tiny_classifier() -> onnx.ModelProto:
    model = encoder_graphs.encoder(layers=LAYERS, seq=SEQ, hidden=HIDDEN, heads=HEADS,
                                      ffn=FFN, vocab=VOCAB, seed=0)
    graph = model.graph
    head = np.random.default_rng(5).standard_normal((HIDDEN, CLASSES)).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(head, "head.weight"))
    graph.node.append(helper.make_node("ReduceMean", ["last_hidden_state"], ["pooled"],
                                       name="/pool/ReduceMean", axes=[1], keepdims=0))
    graph.node.append(helper.make_node("MatMul", ["pooled", "head.weight"], ["logits"],
                                       name="/head/MatMul"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES]))
    onnx.checker.check_model(model)
    return model


def make_split(session: ort.InferenceSession, count: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs [count, SEQ] (right padding 0-3 tokens) and the dense onnxruntime labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (count, SEQ)).astype(np.int64)
    mask = np.ones((count, SEQ), np.int64)
    for i, pad in enumerate(rng.integers(0, 4, count)):
        if pad:
            mask[i, -pad:] = 0
    labels = np.array([int(np.argmax(session.run(None, {"input_ids": ids[i:i + 1],
                                                        "attention_mask": mask[i:i + 1]})[0]))
                       for i in range(count)])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def write_tiny_classifier(root: Path, count: int, seed: int) -> tuple[Path, Path]:
    """(tiny.onnx, calib.npz of `count` labelled inputs from `seed`) written under `root`."""
    model, calib = root / "tiny.onnx", root / "calib.npz"
    onnx.save(tiny_classifier(), model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.savez(calib, **make_split(session, count, seed=seed))
    return model, calib


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tune")
    model = root / "tiny.onnx"
    onnx.save(tiny_classifier(), model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    calib, held_out = root / "calib.npz", root / "held_out.npz"
    np.savez(calib, **make_split(session, 20, seed=1))
    np.savez(held_out, **make_split(session, 20, seed=2))
    return {"model": model, "calib": calib, "held_out": held_out, "root": root}


@pytest.fixture
def small_search(monkeypatch):
    """A search small enough for a unit test, with thresholds low enough to cost accuracy."""
    use_small_search_tables(monkeypatch)


def plain_accuracy(files: dict[str, Path], config_path: Path) -> tuple[float, int]:
    """Compile with esact-cc's pipeline (INT8 from the same calibration file) + the config, run
    the plain reference interpreter per sample: (accuracy in points, reused rows)."""
    compiled = api.compile(files["model"], stage="spls", calibration_data=str(files["calib"]),
                           spls_config=str(config_path))
    data = np.load(files["calib"])
    hits = 0
    for i in range(len(data["labels"])):
        out = run_module(compiled.module, {"input_ids": data["input_ids"][i:i + 1],
                                           "attention_mask": data["attention_mask"][i:i + 1]},
                         compiled.store)
        hits += int(np.argmax(out["logits"])) == int(data["labels"][i])
    return 100.0 * hits / len(data["labels"]), len(find_spls_layers(compiled.module))


def run_tune(files: dict[str, Path], out: Path, *extra: str) -> int:
    return esact_tune_main.main([str(files["model"]), "--calibration-data", str(files["calib"]),
                                 "--labels-key", "labels", "-o", str(out), "--quiet", *extra])


def test_tuner_respects_budget_and_esact_cc_reproduces_it(files, small_search, tmp_path):
    out = tmp_path / "spls.json"
    budget = 10.0  # 2 of the 20 calibration samples
    # No layer screen: on 20 inputs and the small tables' 3-step ladder, margin 3 screens out
    # both layers (the dense program, which esact-cc refuses); the screen has its own tests.
    assert run_tune(files, out, "--budget", str(budget), "--layer-screen", "off") == 0
    written = json.loads(out.read_text())
    info = written["info"]
    chosen = info[info["chosen"]]
    assert info["samples"] == 20 and info["ir"] == "quantized"
    assert info["dense_accuracy"] == 100.0
    assert chosen["loss_points"] <= budget
    # The budget really constrained the search: the most aggressive settings cost more.
    config = SplsConfig.load(out)
    accuracy, layers = plain_accuracy(files, out)
    # esact-cc predicts exactly the layers the config leaves the prediction on (the per-layer
    # search may turn a layer's off where its reuse does not pay).
    predicted = [i for i in range(LAYERS)
                 if {**config.options, **config.layers.get(i, {})}.get("prediction") != "off"]
    assert predicted and layers == len(predicted)
    # Independent check: esact-cc with the written config, run without the tuner's memo.
    assert accuracy == pytest.approx(chosen["accuracy"])
    assert 100.0 - accuracy <= budget
    assert chosen["reduction"] >= info["uniform"]["reduction"]
    assert config.options["similarity"] in ("cosprob", "overlap")


def test_budget_binds_and_zero_budget_loses_nothing(files, small_search):
    inputs = spls_calibration_inputs.model_inputs(files["model"])
    data = spls_calibration_inputs.load_calibration_data(files["calib"], inputs, "labels")
    evaluator = spls_measurement.SplsEvaluator(files["model"], data, ir="transformer")
    # The largest-reduction search on the mean loss: its best is the best it measured.
    plain = spls_tuning.SearchOptions(confidence=0.5, layer_search="largest",
                                      layer_first_reference=0, loss_estimate="flips",
                                      layer_screen="off")
    loose = spls_tuning.tune(evaluator, 100.0, search=plain)
    strict = spls_tuning.tune(evaluator, 0.0, search=plain)
    assert any(m.loss > 0 for m in strict.history), "no setting costs accuracy: test is vacuous"
    assert strict.best.loss <= 0.0
    assert loose.best.reduction > strict.best.reduction
    for result in (loose, strict):
        assert result.best.reduction == max(m.reduction for m in result.history
                                            if m.loss <= result.budget + 1e-9)


def test_tuner_never_reads_held_out_data(files, small_search, tmp_path):
    opened: list[str] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and isinstance(args[0], (str, Path)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        assert run_tune(files, tmp_path / "spls.json", "--budget", "5", "--ir", "transformer",
                        "--uniform-only") == 0
    finally:
        watching[0] = False
    assert str(files["calib"]) in opened
    assert not [p for p in opened if Path(p).name == files["held_out"].name]


def test_accounting_without_reuse_is_dense_plus_prediction(files):
    inputs = spls_calibration_inputs.model_inputs(files["model"])
    data = spls_calibration_inputs.load_calibration_data(files["calib"], inputs, "labels",
                                                         limit=4)
    evaluator = spls_measurement.SplsEvaluator(files["model"], data, ir="transformer")
    m = evaluator.measure([spls_measurement.uniform_config(threshold=2.0, attention="dense")])[0]
    real = np.load(files["calib"])["attention_mask"][:4].sum(axis=1)
    dh = HIDDEN // HEADS
    per_token = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN  # q, k, v, o + FFN
    dense = LAYERS * sum(int(n) * per_token + 2 * HEADS * int(n) ** 2 * dh for n in real)
    products = LAYERS * sum(2 * int(n) * HIDDEN * HIDDEN + HEADS * int(n) ** 2 * dh
                            for n in real)
    assert m.work.dense == dense  # padding is not counted
    assert m.work.executed == dense
    assert m.work.reused_fraction == 0.0
    assert m.reduction == pytest.approx(-products * PREDICTION_MAC_PER_PRODUCT / dense)
    assert m.loss == 0.0
    assert evaluator.reuse_off_gap() == 0.0  # the SPLS program is exact with reuse off
    assert 0.0 < m.work.topk_recall < 1.0
    everything, sparse = evaluator.measure([
        spls_measurement.uniform_config(threshold=2.0, **{"k-ratio": 1.0}),
        spls_measurement.uniform_config(threshold=2.0, attention="topk")])
    assert everything.work.topk_recall == 1.0  # k = L: SPA and the exact top-k keep every key
    assert sparse.work.topk_recall is None  # not measurable: dropped keys are never generated


def test_random_control_reuses_as_many_rows(files):
    inputs = spls_calibration_inputs.model_inputs(files["model"])
    data = spls_calibration_inputs.load_calibration_data(files["calib"], inputs, "labels",
                                                         limit=6)
    evaluator = spls_measurement.SplsEvaluator(files["model"], data, ir="transformer")
    config = spls_measurement.uniform_config(threshold=0.3)
    prepared = evaluator._prepare(config)
    for index in range(6):
        memo: dict = {}
        _, work = evaluator._run(prepared, index, memo, None)
        counts = {id(layer.similarity): w.reused_rows for layer, w in zip(prepared.layers, work)}
        _, control = evaluator._run(prepared, index, memo,
                                    spls_memo_interpreter.RandomReuse(counts, (0, index)))
        assert [w.reused_rows for w in control] == [w.reused_rows for w in work]
    assert sum(w.reused_rows for w in work) > 0


def test_per_layer_options_reach_the_pass(files, tmp_path):
    scheme, config = select_scheme({"spls_option": ["threshold=0.95", "window=3",
                                                    "1:threshold=0.5", "0:window=2",
                                                    "similarity=overlap"]})
    assert scheme.name == "spls"
    assert config.pass_options() == {"threshold": 0.95, "window": 3, "similarity": "overlap",
                                     "layers": "0:window=2;1:threshold=0.5"}
    out = tmp_path / "spls.mlir"
    result = run_in_process(
        "esact-cc", files["model"], "--compile-to", "spls", "--calibration-data", files["calib"],
        "--spls-option", "threshold=0.95", "--spls-option", "window=3",
        "--spls-option", "1:threshold=0.5", "--spls-option", "0:window=2", "-o", out,
        cwd=out.parent)
    assert result.returncode == 0, result.stderr.decode()
    sims = [line for line in out.read_text().splitlines() if "spls.local_similarity" in line]
    assert len(sims) == 2
    assert "window(2) threshold(9.500000e-01)" in sims[0]
    assert "window(3) threshold(5.000000e-01)" in sims[1]


def test_config_file_round_trip_and_cli_override(files, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(SplsConfig({"threshold": 0.9, "hlog-bits": 6}, {1: {"threshold": 0.7}},
                               {"note": "x"}).to_json())
    scheme, settings = select_scheme({"spls_config": str(path), "spls_option": ["1:window=1"]})
    assert scheme.name == "spls"
    assert settings.pass_options() == {"hlog_bits": 6, "threshold": 0.9,
                                       "layers": "1:threshold=0.7,window=1"}
    assert select_scheme({"sparsity": "dense"})[0].name == "dense"
    assert select_scheme({})[0].name == "dense"
    with pytest.raises(CompileError, match="scheme 'dense' takes no options"):
        select_scheme({"sparsity": "dense", "spls_option": ["threshold=1"]})
    with pytest.raises(CompileError, match="--spls-config needs --sparsity spls"):
        select_scheme({"sparsity": "dense", "spls_config": str(path)})


def _one_line_error(args: list[str], fragment: str) -> None:
    """A console script's main run in process: exit 1, one `prog: error:` line, no traceback."""
    result = run_in_process(*args, cwd=Path.cwd())
    stderr = result.stderr.decode()
    assert result.returncode == 1, result.stdout.decode() + stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{args[0]}: error: "), stderr
    assert fragment in lines[0], lines[0]


def _one_line_error_in_process(main, args: list[str], fragment: str, capsys,
                               code_expected: int = 1) -> None:
    """The same through `main()` (an escaping exception would fail the test), without the
    cost of a process start per case."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse's usage errors: usage, then `prog: error:`, exit 2
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    prog = main.__module__.rsplit(".", 1)[-1].removesuffix("_main").replace("_", "-")
    if lines and lines[0].startswith("usage: "):
        assert code == 2
        lines = lines[-1:]
    else:
        assert code == code_expected  # 2: a bad command line found after parsing
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    assert fragment in lines[0], lines[0]


def test_console_scripts_print_one_line_errors(files, tmp_path):
    _one_line_error(["esact-tune", str(files["model"]), "--calibration-data",
                     str(tmp_path / "missing.npz"), "-o", str(tmp_path / "x.json")], "not found")
    _one_line_error(["esact-cc", str(files["model"]), "--compile-to", "spls",
                     "--spls-option", "nosuch=1"], "unknown option 'nosuch'")


@pytest.mark.parametrize("extra, fragment", [
    (["--calibration-data", "missing.npz"], "not found"),
    (["--labels-key", "nope"], "no labels array 'nope'"),
    (["--budget", "-1"], "--budget must be"),
    (["--budget", "nan"], "--budget must be"),
    (["--budget", "x"], "invalid float value"),
    (["--input", "bogus"], "bad --input"),
    (["--input", "nosuch=labels"], "model does not have"),
    (["--scored-output", "nosuch"], "no output 'nosuch'"),
    (["--ir", "esact"], "invalid choice"),
])
def test_esact_tune_errors_are_one_line(files, tmp_path, extra, fragment, capsys):
    out = tmp_path / "spls.json"
    args = [str(files["model"]), "--calibration-data", str(files["calib"]),
            "--labels-key", "labels", "-o", str(out), "--quiet", "--samples", "2"]
    _one_line_error_in_process(esact_tune_main.main, args + extra, fragment, capsys,
                               2 if fragment in ("--budget must be", "bad --input") else 1)
    assert not out.exists()


def test_esact_tune_rejects_an_output_under_a_file_and_a_missing_model(files, tmp_path, capsys):
    _one_line_error_in_process(esact_tune_main.main, [
        str(files["model"]), "--calibration-data", str(files["calib"]),
        "-o", str(files["model"] / "dir.json")], "is not a directory", capsys)
    _one_line_error_in_process(esact_tune_main.main, [
        str(tmp_path / "none.onnx"), "--calibration-data", str(files["calib"]),
        "-o", str(tmp_path / "x.json")], "none.onnx", capsys)


@pytest.mark.parametrize("extra, fragment", [
    (["--spls-option", "nosuch=1"], "unknown option 'nosuch'"),
    (["--spls-option", "threshold=abc"], "threshold must be a number"),
    (["--spls-option", "x:threshold=1"], "bad layer index"),
    (["--spls-option", "threshold"], "expected NAME=VALUE"),
    (["--sparsity", "dense", "--spls-option", "threshold=1"], "scheme 'dense' takes no options"),
    (["--sparsity", "sangr"], "unknown sparsity scheme 'sangr'"),
    (["--spls-option", "7:threshold=1"], "layer(s) 7"),
    (["--spls-option", "k-ratio=1.5"], "k-ratio must be in (0, 1]"),
])
def test_esact_cc_spls_errors_are_one_line(files, tmp_path, extra, fragment, capsys):
    from esact_cc.cli import esact_cc_main

    out = tmp_path / "out.mlir"
    _one_line_error_in_process(esact_cc_main.main, [
        str(files["model"]), "--compile-to", "spls", "--calibration-data", str(files["calib"]),
        "-o", str(out), *extra], fragment, capsys)
    assert not out.exists()


def test_esact_cc_rejects_bad_config_files(files, tmp_path, capsys):
    from esact_cc.cli import esact_cc_main

    cases = {"{": "not JSON", '{"format": "other"}': "not an SPLS config",
             '{"format": "esact-spls-config", "version": 1, "options": {"window": 1.5}}':
                 "window must be an integer",
             '{"format": "esact-spls-config", "version": 2}': "unsupported version",
             '{"format": "esact-spls-config", "version": 1, "layers": {"a": {}}}':
                 "bad layer index 'a'",
             '{"format": "esact-spls-config", "version": 1, "extra": 1}': "unknown key 'extra'"}
    for index, (text, fragment) in enumerate(cases.items()):
        path = tmp_path / f"bad{index}.json"
        path.write_text(text)
        _one_line_error_in_process(esact_cc_main.main, [
            str(files["model"]), "--compile-to", "spls", "--spls-config", str(path)],
            fragment, capsys)
