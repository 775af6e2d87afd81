"""The core of bench/scheme_comparison.py: one model, every scheme, like for like.

For one `Case` (an ONNX model, calibration inputs and reporting inputs held apart):
1. the model is compiled ONCE to INT8 IR (ranges from the calibration inputs); every scheme's
   evaluator (esact-tune's: esact_cc/tuning/spls_measurement.py, sanger_tuning.py,
   spatten_tuning.py) shares that module, on the calibration inputs and on the reporting ones;
2. accuracy is task accuracy when the case has labels, else the cosine of the scored output to
   the FP32 model's (onnxruntime), x100; the budget is the same for every scheme: at most
   `budget` points below dense INT8 with labels, else a mean cosine >= `min_cosine`;
3. each scheme is tuned by esact-tune's search on the calibration inputs, then measured on the
   reporting inputs: its loss, and a curve of uniform settings (the tuned SPLS family with its
   threshold swept, Sanger's threshold grid, SpAtten's token_keep grid) for the trade-off plot;
4. the tuned setting is lowered from the same IR to a binary and run on the hardware model on
   the first reporting inputs; its outputs must equal the INT8 reference interpreter's (the
   sparsity-stage IR the accuracy was measured on) bit for bit. A compile that does not fit
   the hardware is recorded as that one-line error.

Computation removed is counted on the MAC array (dense MACs - executed MACs, per component,
from the hardware report), the prediction's cost separately as its on-chip energy; the plot's
x is the same quantity from the interpreter (SPLS's accounting without the prediction term;
Sanger / SpAtten: scores removed x the attention's share of the dense MACs).
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esact_cc.runtime.errors import EsactError
from esact_cc.tuning.spls_calibration_inputs import CalibrationData
from esact_cc.tuning.spls_measurement import SplsEvaluator

SCHEMES = ("dense", "spls", "sanger", "spatten")
PAPER_ATTENTION_RATIOS = {"spatten": 2.95, "sanger": 2.26}
"""ESACT's attention-level energy efficiency over SpAtten and Sanger (arXiv 2512.02403)."""
PAPER_SPARSITY = {
    "spls": ("all layers' computation", "52.03% removed across 26 benchmarks at < 1% loss "
             "(ESACT, arXiv 2512.02403, abstract)"),
    "sanger": ("attention", "0.08-0.27 attention density, 73-92% of the scores removed, on "
               "BERT at L = 128-512 without accuracy loss, mask-aware fine-tuning (Sanger, "
               "MICRO 2021, abstract)"),
    "spatten": ("attention", "cascade token pruning 3.8x and head pruning 1.1x on BERT, i.e. "
                "about 74% of the attention removed by token pruning (SpAtten, HPCA 2021, as "
                "issue 13 quotes them; not re-checked against the paper's text here, whose "
                "abstract gives 10.0x less DRAM access over 30 benchmarks)"),
}
"""Per scheme: what its paper's sparsity counts, and the figure the table compares with."""
LAYER_COMPONENTS = {"qkv": ("q", "k", "v"), "attention": ("qk", "pv"), "o": ("o",),
                    "ffn": ("ffn1", "ffn2")}
"""Report components (runtime/report.py COMPONENTS) grouped as the table shows them."""

Log = Callable[[str], None]


@dataclass
class Case:
    """One model of the table: the ONNX file, its scored output, the inputs held apart."""

    name: str
    title: str
    onnx: Path
    output: str
    calibration: CalibrationData
    reporting: CalibrationData
    hw: str | None = None
    search: str = "full"
    """SPLS's search tables when `Settings.search` leaves it to the case (`use_search_tables`)."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    budget: float = 1.0
    """Points of task accuracy below dense INT8 (labelled cases)."""
    min_cosine: float = 0.99
    """Mean cosine to the FP32 model (unlabelled cases)."""
    hw_inputs: int = 1
    """Reporting inputs run on the hardware model."""
    per_layer: bool = True
    curves: bool = True
    schemes: tuple[str, ...] = SCHEMES
    search: str | None = None
    """SPLS's search tables: esact-tune's own ("full"), `QUICK_SEARCH` ("quick"), or None:
    the case's choice."""
    prediction_price: str = "design"
    """esact-tune's price of an HLog product: "design" (0.1 MAC) or "hardware" (measured on
    the hardware model, esact_cc/tuning/prediction_price.py)."""
    screen_margin: int | None = None
    """esact-tune's `--screen-margin` for SPLS (ladder steps a layer's floor keeps above the
    threshold where its screen scan broke); None: esact-tune's default."""


QUICK_SEARCH = {
    "UNIFORM_GRID": (("cosprob", "dense", 4, (0.9, 0.95, 0.98, 0.99, 0.995)),
                     ("cosprob", "dense", 6, (0.9, 0.95, 0.98, 0.99, 0.995)),
                     ("cosprob", "topk", 6, (0.95, 0.99))),
    "REFINE_VALUES": {"window": (2, 8)},
    "FINER_THRESHOLDS": {"cosprob": (0.97, 0.993, 0.997), "overlap": (0.75,)},
    "LAYER_THRESHOLDS": {"cosprob": (0.9, 0.95, 0.98, 0.99, 0.995, 2.0),
                         "overlap": (0.5, 0.75, 1.0, 2.0)},
}
"""A smaller SPLS search for the large models (the same search over fewer values of
esact_cc/tuning/spls_tuning.py's tables; the cosprob similarity, 4- and 6-bit HLog)."""


FULL_SEARCH: dict[str, Any] = {}
SEARCHES = ("full", "quick", "quick-deep")
"""quick-deep: `QUICK_SEARCH` but each layer's threshold ladder is esact-tune's own (down to
0.6), so a layer can go below the quick ladder's 0.9 at the quick search's cost."""


def use_search_tables(kind: str) -> None:
    """Set esact-tune's SPLS search tables for this process (`SEARCHES`)."""
    from esact_cc.tuning import spls_tuning

    if not FULL_SEARCH:
        FULL_SEARCH.update({name: getattr(spls_tuning, name) for name in QUICK_SEARCH})
    tables = FULL_SEARCH if kind == "full" else dict(QUICK_SEARCH)
    if kind == "quick-deep":
        tables["LAYER_THRESHOLDS"] = FULL_SEARCH["LAYER_THRESHOLDS"]
    for name, value in tables.items():
        setattr(spls_tuning, name, value)


# ------------------------------------------------------------------------------ evaluators


def fp32_outputs(case: Case, samples: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(case.onnx), providers=["CPUExecutionProvider"])
    return [np.asarray(session.run([case.output], dict(s))[0]) for s in samples]


def on_inputs(base: SplsEvaluator, data: CalibrationData,
              reference: list[np.ndarray] | None) -> SplsEvaluator:
    """`base`'s compiled module measured on `data`; scores against `reference` (FP32 outputs)
    when given, so dense INT8 itself scores its cosine to FP32."""
    evaluator = copy.copy(base)
    evaluator.samples, evaluator.labels = data.samples, data.labels
    dense = evaluator._prepare(None)
    int8 = [evaluator._run(dense, i, {}, None)[0] for i in range(len(data.samples))]
    evaluator.dense_outputs = reference if reference is not None else int8
    evaluator.dense_scores = evaluator._scores(int8)
    evaluator.dense_accuracy = float(np.mean(evaluator.dense_scores))
    if reference is not None:  # SPLS's reuse-off check compares with dense INT8, not FP32
        evaluator.reuse_off_gap = functools.partial(_reuse_off_gap, evaluator, int8)
    return evaluator


def _reuse_off_gap(evaluator: SplsEvaluator, int8: list[np.ndarray], count: int = 4) -> float:
    reference, evaluator.dense_outputs = evaluator.dense_outputs, int8
    try:
        return SplsEvaluator.reuse_off_gap(evaluator, count)
    finally:
        evaluator.dense_outputs = reference


def as_scheme(evaluator: SplsEvaluator, scheme: str) -> Any:
    """The same compiled module and inputs, measured by `scheme`'s evaluator class."""
    if scheme == "spls":
        return evaluator
    if scheme == "sanger":
        from esact_cc.tuning.sanger_tuning import SangerEvaluator as cls
    else:
        from esact_cc.tuning.spatten_tuning import SpattenEvaluator as cls
    other = cls.__new__(cls)
    other.__dict__.update(evaluator.__dict__)
    return other


# ------------------------------------------------------------------------------ tuning


def tune_scheme(scheme: str, evaluator: Any, budget: float, per_layer: bool, log: Log,
                screen_margin: int | str | None = None,
                record: dict[str, Any] | None = None) -> Any:
    """esact-tune's search for `scheme` on the calibration evaluator: the chosen measurement
    (`screen_margin`: SPLS's `--screen-margin`, None for esact-tune's default; `record`: where
    SPLS's margin, and its held-apart choice when `auto`, are written)."""
    from esact_cc.tuning.spls_tuning import DEFAULT_MARGIN_SE, SearchOptions, tune

    if scheme == "spls":
        search = SearchOptions() if screen_margin is None else SearchOptions(
            screen_margin=screen_margin)
        result = tune(evaluator, budget, per_layer=per_layer, log=log, search=search)
        if record is not None and result.search is not None:
            record["spls_screen_margin_used"] = result.search.screen_margin
            record["spls_screen_margin_choice"] = (None if result.margin_choice is None else
                                                   result.margin_choice.as_dict())
        return result.best
    if scheme == "sanger":
        from esact_cc.tuning.sanger_tuning import tune_sanger as search
    else:
        from esact_cc.tuning.spatten_tuning import tune_spatten as search
    return search(evaluator, budget, per_layer, DEFAULT_MARGIN_SE, log).best


def measure(scheme: str, evaluator: Any, configs: Sequence[Any]) -> list[Any]:
    return evaluator.measure(list(configs))


def curve_configs(scheme: str, tuned: Any) -> list[Any]:
    """Uniform settings around the tuned one, for the trade-off curve."""
    if scheme == "spls":
        from esact_cc.sparsity.spls_options import SplsConfig
        from esact_cc.tuning.spls_measurement import REUSE_OFF
        from esact_cc.tuning.spls_tuning import LAYER_THRESHOLDS

        options = dict(tuned.config.options)
        return [SplsConfig(options={**options, "threshold": t})
                for t in LAYER_THRESHOLDS[options["similarity"]] if t != REUSE_OFF]
    if scheme == "sanger":
        from esact_cc.tuning.sanger_tuning import THRESHOLD_GRID, uniform

        return [uniform(t) for t in THRESHOLD_GRID]
    from esact_cc.tuning.spatten_tuning import TOKEN_KEEP_GRID, uniform

    return [uniform(t) for t in TOKEN_KEEP_GRID]


def removed_fraction(scheme: str, m: Any, attention_share: float | None) -> float | None:
    """MAC-array work removed over the layers' dense MACs, from the interpreter's counts."""
    if scheme == "spls":
        return float(m.work.reduction_without_prediction)
    return None if attention_share is None else float(m.sparsity) * attention_share


def point(scheme: str, m: Any, attention_share: float | None) -> dict[str, Any]:
    out = {"options": dict(sorted(m.config.options.items())),
           "layers": {str(i): dict(o) for i, o in sorted(m.config.layers.items())},
           "score": m.accuracy, "dense_score": m.dense_accuracy, "loss_points": m.loss,
           "mac_removed": removed_fraction(scheme, m, attention_share)}
    out["scheme_sparsity"] = (float(m.work.reduction) if scheme == "spls"
                              else float(m.sparsity))
    return out


# ------------------------------------------------------------------------------ hardware


def config_file(scheme: str, m: Any, directory: Path) -> Path:
    path = directory / f"{scheme}.json"
    path.write_text(m.config.to_json())
    return path


def hardware_run(evaluator: SplsEvaluator, case: Case, scheme: str, config_path: Path | None,
                 inputs: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Lower the INT8 IR with `scheme` to a binary, run it on `inputs`, check it against the
    reference interpreter on the sparsity-stage IR; per-input means of the report's figures."""
    from esact_cc.api import CompiledModel
    from esact_cc.pipeline import CompileOptions, continue_pipeline
    from esact_cc.interpreter.reference_interpreter import run_module
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.run_program import run_program
    from esact_cc.weight_store import WeightStore

    module = evaluator.base.clone()
    store = WeightStore({name: evaluator.base_store[name] for name in evaluator.base_store})
    extra: dict[str, Any] = {"hw": case.hw}
    if scheme != "dense":
        extra.update(sparsity=scheme, spls_config=str(config_path))
    shapes = {name: tuple(value.shape) for name, value in inputs[0].items()}
    references: list[dict[str, np.ndarray]] = []

    def interpret(stage: str, stage_module: Any, stage_store: WeightStore) -> None:
        if stage == "sparsity":
            references.extend(run_module(stage_module, s, stage_store) for s in inputs)

    try:
        continue_pipeline(module, store, "quantized", "esact",
                          CompileOptions(input_shapes=shapes, extra=extra), on_stage=interpret)
    except EsactError as error:
        return {"error": str(error)}
    program = CompiledModel(module, store, "esact").program()
    config = resolve_config(case.hw)
    runs = [run_program(program, s, config) for s in inputs]
    pairs = [(np.asarray(run.outputs[name], np.float64), np.asarray(ref[name], np.float64))
             for run, ref in zip(runs, references) for name in ref]
    diff = max(float(np.max(np.abs(got - want), initial=0.0)) for got, want in pairs)
    scale = max(float(np.max(np.abs(want), initial=0.0)) for _, want in pairs)
    return {"bit_exact": all(np.array_equal(got, want) for got, want in pairs),
            "max_abs_diff": diff, "max_rel_diff": diff / scale if scale else diff,
            **summarize_runs(runs)}


def summarize_runs(runs: Sequence[Any]) -> dict[str, Any]:
    """Per-input means of one program's runs (the table's hardware columns)."""
    rows = [run_figures(run) for run in runs]
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def run_figures(run: Any) -> dict[str, float]:
    report = run.report
    components = report["components"]
    figures: dict[str, float] = {"cycles": report["total"]["cycles"]}
    for boundary in ("on_chip", "system"):
        energy = report["energy"][boundary]
        figures[f"{boundary}_uj"] = energy["energy_pj"] * 1e-6
        figures[f"{boundary}_tops_per_watt"] = energy["tops_per_watt"]
        figures[f"{boundary}_tops_per_watt_executed"] = energy["tops_per_watt_executed"]
    for group, names in LAYER_COMPONENTS.items():
        present = [components[n] for n in names if n in components]
        figures[f"{group}_macs_dense"] = sum(c["macs_dense"] for c in present)
        figures[f"{group}_macs_executed"] = sum(c["macs_executed"] for c in present)
    costs, attention, prediction = attention_level_parts(run)
    figures["attention_pj"] = float(costs.dynamic_on_chip[attention].sum())
    figures["prediction_pj"] = float(costs.dynamic_on_chip[prediction].sum())
    figures["attention_ops"] = 2.0 * figures["attention_macs_dense"]
    figures["attention_tops_per_watt"] = figures["attention_ops"] / (
        figures["attention_pj"] + figures["prediction_pj"])
    return figures


def attention_level_parts(run: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(per-instruction costs, attention instructions, prediction instructions) of a run, as
    attention-level efficiency counts them: the attention's MAC work (QK^T, PV) and its
    softmax; the scheme's whole prediction. Each instruction's on-chip dynamic energy (static
    energy is the whole chip's)."""
    from esact_cc.runtime.energy import EnergyModel
    from esact_cc.runtime.report import run_costs

    costs = run_costs(run.info, run.schedule, run.work, EnergyModel.from_config(run.config),
                      run.config)
    comp = np.asarray(run.info.components, dtype=object)
    opcodes = np.asarray(run.info.opcodes, dtype=object)
    attention = np.isin(comp, LAYER_COMPONENTS["attention"]) | (
        (comp == "sfu") & (opcodes == "softmax"))
    return costs, attention, comp == "predict"


def attention_share(hardware: dict[str, Any]) -> float | None:
    if "error" in hardware:
        return None
    dense = sum(hardware[f"{g}_macs_dense"] for g in LAYER_COMPONENTS)
    return hardware["attention_macs_dense"] / dense if dense else None


# ------------------------------------------------------------------------------ one case


def prediction_price(base: SplsEvaluator, case: Case, kind: str, log: Log) -> Any:
    """esact-tune's price of the prediction (`Settings.prediction_price`), set on `base`
    before the calibration and reporting evaluators copy it."""
    from esact_cc.tuning.prediction_price import DESIGN_PRICE, hardware_price
    from esact_cc.tuning.spls_measurement import uniform_config

    price = DESIGN_PRICE if kind == "design" else hardware_price(
        base, uniform_config(), case.hw, dram=kind == "system")
    base.mac_per_product = price.mac_per_product
    log(f"{case.name}: the prediction priced {price.mac_per_product:.3f} MAC per HLog product "
        f"({price.source})")
    return price


def screen_margin(settings: Settings) -> int | str:
    """The SPLS layer screen's margin the search runs with (esact-tune's default if unset)."""
    from esact_cc.tuning.layer_screen import DEFAULT_SCREEN_MARGIN

    return DEFAULT_SCREEN_MARGIN if settings.screen_margin is None else settings.screen_margin


def compare_case(case: Case, settings: Settings, log: Log) -> dict[str, Any]:
    """Every scheme of `settings` on `case`: the JSON-ready result of one model."""
    search = settings.search or case.search
    use_search_tables(search)
    labelled = case.calibration.labels is not None
    quantize = list(case.calibration.samples)
    base = SplsEvaluator(case.onnx, case.calibration, case.output, quantize_samples=quantize)
    price = prediction_price(base, case, settings.prediction_price, log)
    calib = on_inputs(base, case.calibration,
                      None if labelled else fp32_outputs(case, case.calibration.samples))
    report = on_inputs(base, case.reporting,
                       None if labelled else fp32_outputs(case, case.reporting.samples))
    budget = settings.budget if labelled else max(
        0.0, calib.dense_accuracy - 100.0 * settings.min_cosine)
    result: dict[str, Any] = {
        "model": case.name, "title": case.title, "notes": case.notes,
        "metric": "task accuracy (points)" if labelled else "cosine to FP32 x100",
        "calibration_inputs": len(case.calibration.samples),
        "reporting_inputs": len(case.reporting.samples),
        "hardware_inputs": min(settings.hw_inputs, len(case.reporting.samples)),
        "hw": case.hw or "default", "spls_search": search,
        "spls_screen_margin": screen_margin(settings),
        "dense_int8": {"calibration": calib.dense_accuracy, "reporting": report.dense_accuracy},
        "budget_points": budget, "prediction_price": price.as_dict(),
        "budget": (f"<= {settings.budget:g} points of accuracy" if labelled
                   else f"mean cosine to FP32 >= {settings.min_cosine:g}"),
        "schemes": {},
    }
    log(f"{case.name}: dense INT8 {calib.dense_accuracy:.3f} (calibration), "
        f"{report.dense_accuracy:.3f} (reporting); tuner budget {budget:.3f} points")
    hw_inputs = case.reporting.samples[: settings.hw_inputs]
    with tempfile.TemporaryDirectory(prefix="scheme-comparison-") as tmp:
        dense_hw = hardware_run(base, case, "dense", None, hw_inputs)
        share = attention_share(dense_hw)
        result["schemes"]["dense"] = {"hardware": dense_hw, "reporting": {
            "score": report.dense_accuracy, "loss_points": 0.0, "mac_removed": 0.0}}
        for scheme in settings.schemes:
            if scheme == "dense":
                continue
            log(f"{case.name} / {scheme}: tuning on {len(case.calibration.samples)} inputs")
            tuned = tune_scheme(scheme, as_scheme(calib, scheme), budget, settings.per_layer,
                                log, settings.screen_margin, result)
            held = measure(scheme, as_scheme(report, scheme), [tuned.config])[0]
            path = config_file(scheme, tuned, Path(tmp))
            entry = {"calibration": point(scheme, tuned, share),
                     "reporting": point(scheme, held, share),
                     "hardware": hardware_run(base, case, scheme, path, hw_inputs)}
            if settings.curves:
                entry["curve"] = [point(scheme, m, share) for m in measure(
                    scheme, as_scheme(report, scheme), curve_configs(scheme, tuned))]
            result["schemes"][scheme] = entry
            log(f"{case.name} / {scheme}: {summary_line(entry)}")
    result["attention_ratios"] = attention_ratios(result["schemes"])
    return result


def summary_line(entry: dict[str, Any]) -> str:
    hw = entry["hardware"]
    held = entry["reporting"]
    text = f"held-out loss {held['loss_points']:.3f} points"
    if "error" in hw:
        return f"{text}; binary: {hw['error']}"
    return (f"{text}; binary {exactness(hw)} INT8 interpreter, "
            f"{hw['cycles']:,.0f} cycles, {hw['on_chip_uj']:.2f} uJ on chip, attention "
            f"{hw['attention_tops_per_watt']:.2f} TOPS/W")


def exactness(hw: dict[str, Any]) -> str:
    """How the binary's outputs compare with the INT8 reference interpreter's."""
    if hw["bit_exact"]:
        return "= (bit for bit)"
    return f"!= (max |diff| {hw['max_abs_diff']:.3g}, {hw['max_rel_diff']:.2g} of max |out|)"


def attention_ratios(schemes: dict[str, Any]) -> dict[str, Any]:
    """SPLS's attention-level energy efficiency over each baseline, beside the paper's."""
    def efficiency(name: str) -> float | None:
        hw = schemes.get(name, {}).get("hardware", {})
        return hw.get("attention_tops_per_watt")

    spls = efficiency("spls")
    out = {}
    for other, paper in PAPER_ATTENTION_RATIOS.items():
        base = efficiency(other)
        out[f"spls_over_{other}"] = {
            "measured": None if spls is None or not base else spls / base, "paper": paper}
    return out


def write_json(path: Path, result: dict[str, Any]) -> None:
    from esact_cc.runtime.atomic_write import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
