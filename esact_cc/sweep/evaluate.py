"""Evaluating groups of points: compile each group once, execute each distinct program once
per test sample, re-time every point.

Outputs and work records depend on the program and the input only (runtime/retiming.py). A
group's points share the parameters the compiler reads, so `compile_task` compiles it once
(under its first point's config); groups whose programs are byte-identical (a parameter the
compiler reads that changes nothing for this model, e.g. BPU lanes for a small ViT) share one
execution: it measures the accuracy on the test samples once, records a run per timed input
and re-times it for each point's config, in one or more `ExecutionTask`s (parts of the test
split: the pool's workers share a program's work). Both run in worker processes (local pool or
Ray): everything they need is in the task.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esact_cc.runtime.atomic_write import atomic_write
from esact_cc.runtime.errors import UsageError
from esact_cc.runtime.hw_config import HardwareConfig

from .points import Group, hardware_config
from .spec import BUNDLED_MODEL, ModelSpec


@dataclass(frozen=True)
class ModelData:
    """A model's files and its test samples (one input dict per sample) and labels."""

    onnx_path: Path
    calibration_path: Path
    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray


@dataclass(frozen=True)
class GroupTask:
    group: Group
    model: ModelData
    accuracy_samples: int
    reference_accuracy: float  # the fp32 model (onnxruntime) on the same samples


@dataclass(frozen=True)
class CompiledGroup:
    group_id: str
    digest: str  # run_program.program_digest: equal for the same program
    esb: bytes  # the program as compiled for the group's config


@dataclass(frozen=True)
class ExecutionTask:
    """Groups of one model whose programs are identical, that program, and this task's part
    of its work: the prediction hits on test samples [start, stop) and the rows of the points
    timed on the `timed` inputs (a program's work is split over tasks to keep workers busy)."""

    groups: list[GroupTask]
    program: CompiledGroup  # the first group's
    samples: tuple[int, int]
    timed: tuple[int, ...]


@dataclass(frozen=True)
class ExecutionPart:
    """What an ExecutionTask returns."""

    hits: np.ndarray  # whether each prediction of its samples was right, in sample order
    rows: list[dict[str, Any]]  # its points' rows, without the accuracy columns


def execution_tasks(groups: list[GroupTask], program: CompiledGroup,
                    parts: int) -> list[ExecutionTask]:
    """A program's work in at most `parts` tasks of consecutive test samples; the first also
    records and re-times the timed inputs beyond the accuracy samples (sweep.inputs may
    name any test sample)."""
    count = groups[0].accuracy_samples
    bounds = sorted({count * i // parts for i in range(parts + 1)})
    timed = sorted({point.input for g in groups for point in g.group.points})
    return [ExecutionTask(groups, program, (start, stop), tuple(
                k for k in timed if start <= k < stop or (start == 0 and k >= count)))
            for start, stop in itertools.pairwise(bounds)]


def program_rows(first: GroupTask, parts: list[ExecutionPart]) -> list[dict[str, Any]]:
    """The rows of a program's points once all its parts are in (in sample order): the
    accuracy over all its samples added to each."""
    accuracy = float(np.mean(np.concatenate([part.hits for part in parts])))
    reference = first.reference_accuracy
    return [{**row, "accuracy": accuracy, "accuracy_reference": reference,
             "accuracy_loss": reference - accuracy} for part in parts for row in part.rows]


def load_model_data(model: ModelSpec, spec_dir: Path, work_dir: Path) -> ModelData:
    """The model's ONNX file, calibration file and test split (the bundled digits ViT's, or
    the files the spec names, relative to the spec)."""
    from esact_cc.tuning.spls_calibration_inputs import load_calibration_data, model_inputs

    if model.name == BUNDLED_MODEL and model.onnx is None:
        from esact_cc.bundled_model import MODELS_DIR, load_bundled_model

        bundled = load_bundled_model()
        onnx_path, test_path = bundled.onnx_path, MODELS_DIR / bundled.metadata["test_file"]
        calibration = work_dir / f"calibration-{model.name}.npz"  # keyed by the input name
        atomic_write(calibration, lambda handle: np.savez(
            handle, **{bundled.input_name: bundled.calibration_images}))
    else:
        onnx_path = spec_dir / str(model.onnx)
        test_path = spec_dir / str(model.test_data)
        calibration = spec_dir / model.calibration_data if model.calibration_data else None
    data = load_calibration_data(test_path, model_inputs(onnx_path), model.labels_key)
    if data.labels is None:
        raise UsageError(f"test data '{test_path}' has no labels array '{model.labels_key}'")
    return ModelData(onnx_path, calibration, data.samples, np.asarray(data.labels))


def predictions(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Class predictions of one sample: argmax of the first output's last axis."""
    first = next(iter(outputs.values()))
    return np.asarray(first).reshape(-1, first.shape[-1]).argmax(-1)


def reference_accuracy(model: ModelData, count: int) -> float:
    """Accuracy of the fp32 ONNX model (onnxruntime) on the first `count` test samples."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    hits = [predictions(dict(zip(names, session.run(None, sample))))
            == model.labels[k].reshape(-1) for k, sample in enumerate(model.samples[:count])]
    return float(np.mean(np.concatenate(hits)))


QUANTIZED = "quantized"
"""The last compile stage no hardware parameter or sparsity option reaches (import, lift,
calibration, INT8): compiled once per model in each process, every group continues from a
copy of it (calibration was ~80% of a group's compile on the digits ViT)."""

_quantized_models: dict[tuple[str, ...], tuple[Any, Any]] = {}
"""This process's quantized module and weight store per ONNX and calibration file (by path
and content: a file rewritten between two sweeps of one process is compiled again)."""


def _file_key(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ("",)
    return str(path), hashlib.sha256(Path(path).read_bytes()).hexdigest()


def quantized_model(model: ModelData) -> tuple[Any, Any]:
    """A fresh copy of `model` compiled to the quantized stage (made once per process)."""
    from esact_cc import api
    from esact_cc.weight_store import WeightStore

    key = (*_file_key(model.onnx_path), *_file_key(model.calibration_path))
    if key not in _quantized_models:
        options = {} if model.calibration_path is None else \
            {"calibration_data": str(model.calibration_path)}
        compiled = api.compile(model.onnx_path, stage=QUANTIZED, **options)
        _quantized_models[key] = compiled.module, compiled.store
    module, store = _quantized_models[key]
    # weights are read-only arrays (WeightStore): the copy shares them, later passes add theirs
    return module.clone(), WeightStore({name: store[name] for name in store})


def compile_group(task: GroupTask, work_dir: Path) -> tuple[Any, HardwareConfig]:
    """The group's program (esb.Program) and the config it was compiled under (its first
    point's: the group's points differ in none of the parameters the compiler reads), from
    the model's quantized module: the same program `esact-cc --stage esb` writes."""
    from esact_cc.api import CompiledModel
    from esact_cc.pipeline import CompileOptions, check_compile_options, continue_pipeline

    group = task.group
    config = hardware_config(group.base, group.points[0].hardware)
    hw = work_dir / "hw.toml"
    hw.write_text(config.to_toml())
    options: dict[str, Any] = {"hw": str(hw), "sparsity": group.sparsity["scheme"]}
    if group.sparsity["options"]:
        options["sparsity_option"] = list(group.sparsity["options"])
    check_compile_options(options, "esb")
    module, store = quantized_model(task.model)
    continue_pipeline(module, store, QUANTIZED, "esb", CompileOptions(extra=options))
    return CompiledModel(module, store, "esb").program(), config


def compile_task(task: GroupTask) -> CompiledGroup:
    from esact_cc.runtime.esb import serialize_esb
    from esact_cc.runtime.run_program import program_digest

    with tempfile.TemporaryDirectory(prefix="esact-sweep-") as tmp:
        program, _ = compile_group(task, Path(tmp))
    return CompiledGroup(task.group.id, program_digest(program), serialize_esb(program))


def evaluate_execution(task: ExecutionTask) -> ExecutionPart:
    """The task's prediction hits, and a row per point timed on its inputs (the point's
    parameters, then its figures; program_rows adds the accuracy)."""
    from esact_cc.runtime.esb import parse_esb
    from esact_cc.runtime.functional import execute
    from esact_cc.runtime.retiming import retime
    from esact_cc.runtime.run_program import run_program

    first = task.groups[0]
    program = parse_esb(task.program.esb)
    config = hardware_config(first.group.base, first.group.points[0].hardware)
    model = first.model
    recorded = {k: run_program(program, model.samples[k], config) for k in task.timed}
    hits = []
    for k in range(*task.samples):
        outputs = recorded[k].outputs if k in recorded else \
            execute(program, model.samples[k], config).outputs
        hits.append(predictions(outputs) == model.labels[k].reshape(-1))
    rows = []
    for group_task in task.groups:
        group = group_task.group
        for point in (p for p in group.points if p.input in recorded):
            point_config = hardware_config(group.base, point.hardware)
            report = retime(recorded[point.input], point_config,
                            program_for_config=task.program.digest).report
            rows.append({"point_id": point.id, **point.params, "group_id": group.id,
                         "instructions": len(program.instructions), **report_figures(report)})
    return ExecutionPart(np.concatenate(hits), rows)


def report_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The report's scalar figures as flat columns: total.*, energy.* (not its constants),
    roofline cycles."""
    figures: dict[str, Any] = {}
    _flatten("total", report["total"], figures)
    energy = {k: v for k, v in report["energy"].items() if k != "constants"}
    _flatten("energy", energy, figures)
    figures["roofline_cycles"] = report["roofline_cycles"]
    figures["roofline_bound_by"] = report["roofline"]["bound_by"]
    return figures


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    elif isinstance(value, (int, float, str, bool)):
        into[prefix] = value
