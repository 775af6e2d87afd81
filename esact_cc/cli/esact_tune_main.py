"""`esact-tune`: calibrate SPLS options for a model and write the file `esact-cc --spls-config` takes.

    esact-tune MODEL.onnx --calibration-data FILE.npz|NAME=FILE.npz[:ARRAY] [--labels-key KEY]
        --budget POINTS -o spls.json [--scored-output NAME] [--ir quantized|transformer]
        [--samples N] [--uniform-only] [--confidence C] [--loss-estimate flips|margins]
        [--augment N] [--prediction-price design|hardware|system] [--hw CONFIG.toml]
        [--layer-search largest|efficient]
        [--layer-options threshold[,window][,prediction]] [--layer-first-reference R] [--layer-steps N]
        [--layer-screen on|off] [--screen-margin auto|STEPS]
        [--quiet]

With `--labels-key` the accuracy is the task accuracy (argmax of the output vs the labels);
without it, the mean cosine of the output to the dense output (embeddings). Both are in points
(x100) and `--budget` is the accuracy loss allowed; a setting is accepted when the one-sided
`--confidence` upper bound of its loss on new inputs (from the calibration inputs' per-input
losses: esact_cc/tuning/loss_bound.py) is within it, not its calibration loss; with labels
each input's loss is, by `--loss-estimate`, its flipped prediction or its margin erosion priced
as flips (margin_loss.py). The search and the
config format: esact_cc/tuning/spls_tuning.py, esact_cc/sparsity/spls_options.py. Inputs and
the output path are checked before the search. Errors: `esact-tune: error: <one line>`, exit 1
(2: a bad command line), no traceback, no output file (runtime/cli/user_errors.py).
"""

from __future__ import annotations

import os

# The interpreter runs many small GEMMs; BLAS threads only contend for them (measured 10-20x
# slower on a loaded 2-core machine). Set before numpy loads; the user's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys

from esact_cc.runtime.cli.conventions import is_stdout, tool_parser, write_text_output
from esact_cc.runtime.cli.output_paths import check_output_file, refuse_overwriting_inputs
from esact_cc.runtime.cli.user_errors import exit_code_of
from esact_cc.runtime.thread_policy import limit_blas_threads

PROG = "esact-tune"


def build_parser() -> argparse.ArgumentParser:
    from esact_cc.tuning.spls_measurement import IR_LEVELS

    parser = tool_parser(PROG, "Calibrate SPLS options under an accuracy-loss budget.")
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--calibration-data", required=True, metavar="BINDING",
                        help="calibration inputs, samples on axis 0: FILE.npz (arrays by input "
                        "name, or its one other array for a one-input model) or "
                        "NAME=FILE.npz[:ARRAY]")
    parser.add_argument("--labels-key", metavar="KEY",
                        help="array of integer labels (task accuracy); without it, cosine to the "
                        "dense output")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=ARRAY",
                        help="deprecated: --calibration-data NAME=FILE.npz:ARRAY says the same")
    parser.add_argument("--scored-output", dest="output", metavar="NAME",
                        help="model output that is scored (default: the last output)")
    parser.add_argument("--budget", type=float, default=1.0, metavar="POINTS",
                        help="accuracy loss allowed, in points, held to the --confidence "
                        "upper bound of the calibration loss (default: %(default)s)")
    parser.add_argument("--ir", choices=IR_LEVELS, default="quantized",
                        help="IR the settings are measured on (default: %(default)s, the INT8 "
                        "program; quantized with the calibration data)")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="use the first N calibration samples (default: all)")
    parser.add_argument("--uniform-only", action="store_true",
                        help="skip the per-layer threshold search")
    parser.add_argument("--sparsity", default="spls", metavar="SCHEME",
                        help="the scheme calibrated (default: %(default)s; or one registered "
                        "with a tuning hook: sanger, its threshold; spatten, its keep ratios)")
    add_search_arguments(parser)
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="images: also run N perturbed copies of each calibration input "
                        "(noise, brightness, 1-pixel shift in turn); an input counts as "
                        "flipped when it or any of its copies flips, so inputs near the "
                        "decision boundary are found from the calibration set "
                        "(esact_cc/tuning/calibration_augmentation.py; default: 0, none)")
    parser.add_argument("--prediction-price", choices=("design", "hardware", "system"),
                        default="design",
                        help="MACs per HLog product in the objective: design, docs/design.md "
                        "section 6's 0.1; hardware, the prediction's on-chip energy measured "
                        "on the hardware model on the first calibration input; system, that "
                        "plus the DRAM energy the SPLS program spends beyond the dense one "
                        "(esact_cc/tuning/prediction_price.py; default: %(default)s)")
    parser.add_argument("--hw", metavar="CONFIG.toml",
                        help="hardware config of --prediction-price hardware|system (default: "
                        "the default config)")
    parser.add_argument("-o", "--output", "--output-file", dest="output_file", required=True,
                        metavar="FILE.json", help="where the SPLS config goes (--output-file: "
                        "former spelling)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The search options (shared with bench/spls_tradeoff.py)."""
    from esact_cc.tuning.layer_screen import SCREEN_MODES
    from esact_cc.tuning.loss_bound import LOSS_ESTIMATES
    from esact_cc.tuning.spls_tuning import LAYER_SEARCHES, SearchOptions

    d = SearchOptions()
    parser.add_argument("--confidence", type=float, default=d.confidence, metavar="C",
                        help="a setting is accepted when the one-sided C upper bound of its "
                        "accuracy loss (calibration mean + z(C) standard errors; labels: "
                        "Agresti-Min adjusted, z*100/(n+2) points with no flip in n inputs) is "
                        "within the budget; 0.5: the calibration mean alone "
                        "(default: %(default)s)")
    parser.add_argument("--loss-estimate", choices=LOSS_ESTIMATES, default=d.loss_estimate,
                        help="with labels, what an input's loss is for the bound: 'flips', "
                        "its flipped prediction (0 / +-100); 'margins', how far the setting "
                        "erodes the dense top class's logit margin, priced as the share of "
                        "calibration inputs that erosion would flip (changes before any "
                        "prediction flips; on the digits ViT it chose as aggressive a "
                        "setting: docs/design.md 6.2); cosine losses are read as they are "
                        "(default: %(default)s)")
    parser.add_argument("--margin-se", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--layer-search", choices=tuple(LAYER_SEARCHES), default=d.layer_search,
                        help="per-layer strategy: 'largest' takes, layer by layer from the "
                        "last, the value that reduces most within budget; 'efficient' takes, "
                        "over all layers, the next move with the most reduction per point of "
                        "budget spent (default: %(default)s)")
    parser.add_argument("--layer-options", default=",".join(d.layer_options),
                        metavar="NAME[,NAME]",
                        help="options varied per layer: threshold, window and/or prediction "
                        "(a layer's prediction off when its reuse does not pay for it) "
                        "(default: %(default)s)")
    parser.add_argument("--layer-first-reference", type=int, default=d.layer_first_reference,
                        metavar="R", help="per-layer settings keep rows 0..R-1 out of every "
                        "similarity window (first-reference at least R; default: %(default)s)")
    parser.add_argument("--layer-steps", type=int, default=d.layer_steps, metavar="N",
                        help="efficient search: values of an option tried per layer and round, "
                        "nearest first; 0 = all (default: %(default)s)")
    parser.add_argument("--layer-screen", choices=SCREEN_MODES, default=d.layer_screen,
                        help="'on': before the per-layer search, each layer's thresholds are "
                        "scanned with that layer alone (the others without prediction) from "
                        "the highest down until one is over budget; the search keeps each "
                        "layer --screen-margin ladder steps above that break, and a layer "
                        "whose reuse alone does not pay for its prediction within budget is "
                        "not predicted (esact_cc/tuning/layer_screen.py); 'off': no screen "
                        "(default: %(default)s)")
    parser.add_argument("--screen-margin", type=screen_margin_value, default=d.screen_margin,
                        metavar="auto|STEPS",
                        help="ladder steps a layer's floor keeps above the threshold where its "
                        "screen scan went over budget; 'auto': chosen per model by a "
                        "held-apart check on the calibration inputs (the search on all but "
                        "every 4th input at margins 0-3, the smallest whose setting keeps the "
                        "budget on the 4th inputs' mean loss, then the search on all inputs at "
                        "it; esact_cc/tuning/screen_margin_choice.py; reported in the output's "
                        "screen_margin_choice) (default: %(default)s)")


def screen_margin_value(text: str) -> int | str:
    """`--screen-margin`: 'auto' or a whole number of ladder steps (>= 0 checked with the
    other search options)."""
    from esact_cc.tuning.layer_screen import SCREEN_MARGIN_AUTO

    if text == SCREEN_MARGIN_AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected '{SCREEN_MARGIN_AUTO}' or a whole number of ladder steps, got "
            f"'{text}'") from None


def search_options(args: argparse.Namespace):
    """`SearchOptions` from the arguments of `add_search_arguments`."""
    from esact_cc.runtime.errors import CommandLineError
    from esact_cc.tuning.spls_tuning import SearchOptions

    if args.margin_se is not None:
        raise CommandLineError("--margin-se was replaced by --confidence (a one-sided bound "
                               "on the loss, in both search phases; 0.84 is 1 standard error)")
    options = SearchOptions(
        confidence=args.confidence, loss_estimate=args.loss_estimate,
        layer_search=args.layer_search,
        layer_options=tuple(n.strip() for n in args.layer_options.split(",") if n.strip()),
        layer_first_reference=args.layer_first_reference, layer_steps=args.layer_steps,
        layer_screen=args.layer_screen, screen_margin=args.screen_margin)
    options.validate()
    return options


def _parse_input_keys(specs: list[str]) -> dict[str, str]:
    """The deprecated `--input NAME=ARRAY` (array names in the one calibration archive)."""
    from esact_cc.runtime.errors import CommandLineError

    keys = {}
    for spec in specs:
        name, eq, array = spec.partition("=")
        if not eq or not name or not array:
            raise CommandLineError(f"bad --input '{spec}': expected NAME=ARRAY")
        keys[name] = array
    return keys


def run_cli(args: argparse.Namespace) -> None:
    from pathlib import Path

    from esact_cc.runtime.cli.input_bindings import input_paths as binding_paths
    from esact_cc.runtime.errors import CommandLineError
    from esact_cc.tuning.calibration_augmentation import (
        AugmentedEvaluator,
        augment,
        budget_screen,
        check_augment,
    )
    from esact_cc.tuning.spls_calibration_inputs import load_calibration_data, model_inputs
    from esact_cc.tuning.spls_measurement import SplsEvaluator
    from esact_cc.tuning.spls_tuning import tune

    if args.samples < 0:
        raise CommandLineError(f"--samples must be >= 0, got {args.samples}")
    if not (args.budget >= 0 and args.budget < float("inf")):
        raise CommandLineError(f"--budget must be a finite number of points >= 0, got "
                               f"{args.budget}")
    hook = None if args.sparsity == "spls" else tuning_hook(args.sparsity)
    if hook is not None and args.augment:
        raise CommandLineError(f"--augment: only the spls search reads perturbed copies; "
                               f"--sparsity {args.sparsity} does not")
    if hook is not None and args.prediction_price != "design":
        raise CommandLineError(f"--prediction-price {args.prediction_price}: only the spls "
                               f"search prices a prediction; --sparsity {args.sparsity} has none")
    if args.hw is not None and args.prediction_price == "design":
        raise CommandLineError("--hw: only --prediction-price hardware or system runs the "
                               "hardware model")
    if hook is not None and args.loss_estimate != "flips":
        raise CommandLineError(f"--loss-estimate {args.loss_estimate}: only the spls search "
                               f"prices margins; --sparsity {args.sparsity} bounds flips")
    check_output_file("-o", None if is_stdout(args.output_file) else args.output_file)
    refuse_overwriting_inputs({"-o": None if is_stdout(args.output_file) else args.output_file},
                              {"MODEL": args.model,
                               **binding_paths("--calibration-data", [args.calibration_data])})

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    search = search_options(args)
    check_augment(args.augment, args.loss_estimate)
    data = load_calibration_data(args.calibration_data, model_inputs(args.model),
                                 args.labels_key, _parse_input_keys(args.input), args.samples)
    log(f"esact-tune: {len(data.samples)} calibration samples, "
        f"{'task accuracy' if data.labels is not None else 'cosine to dense'}, IR {args.ir}")
    if hook is not None:
        from esact_cc.tuning.scheme_tuning import tune_registered_scheme

        tune_registered_scheme(hook, args, data, log)
        return
    evaluator = SplsEvaluator(args.model, data, args.output, args.ir)
    price = prediction_price(args, evaluator, log)
    evaluator.mac_per_product = price.mac_per_product
    searched = evaluator
    if args.augment:  # the copies run the program quantized on the inputs themselves
        searched = AugmentedEvaluator(
            evaluator, SplsEvaluator(args.model, augment(data, args.augment), args.output,
                                     args.ir, quantize_samples=data.samples),
            args.augment, budget_screen(args.budget, search))
        searched.copies.mac_per_product = price.mac_per_product
    result = tune(searched, args.budget, per_layer=not args.uniform_only, log=log,
                  search=search)
    info = {
        "model": Path(args.model).name,
        "calibration_data": Path(args.calibration_data).name,
        "calibration_sha256": data.sha256,
        "samples": len(data.samples),
        "metric": "accuracy" if data.labels is not None else "cosine_to_dense",
        "output": evaluator.output,
        "ir": args.ir,
        "dense_accuracy": evaluator.dense_accuracy,
        "prediction_mac_per_product": price.mac_per_product,
        "prediction_price": price.as_dict(),
        "augment": args.augment,
    }
    config = result.config(info)
    write_text_output(args.output_file, config.to_json())
    best = result.best
    if best.work.layers and not any(w.predicted for w in best.work.layers):
        print("esact-tune: warning: no layer's reuse pays for its prediction within the budget: "
              "the config turns the prediction off in every layer, which is the dense program "
              "(esact-cc --spls-config refuses it; compile with --sparsity dense)",
              file=sys.stderr, flush=True)
    if result.margin_choice is not None:
        log(f"esact-tune: screen margin {result.margin_choice.margin} "
            f"({result.margin_choice.reason})")
    log(f"esact-tune: {'per-layer' if best is result.per_layer else 'uniform'} setting: reduction "
        f"{best.reduction:.2%} at {best.loss:.3f} points lost on the calibration set, "
        f"{best.loss_bound(search.margin_se, search.loss_estimate):.3f} at confidence "
        f"{search.confidence:g} ({search.loss_estimate}) "
        f"(uniform: {result.uniform.reduction:.2%} at {result.uniform.loss:.3f}) -> "
        f"{args.output_file}")


def prediction_price(args: argparse.Namespace, evaluator, log):
    """--prediction-price: the design's 0.1 MAC per product, or the hardware model's price
    with the search's starting setting, DRAM beyond dense included for system
    (prediction_price.py)."""
    from esact_cc.tuning.prediction_price import DESIGN_PRICE, hardware_price
    from esact_cc.tuning.spls_measurement import uniform_config

    if args.prediction_price == "design":
        return DESIGN_PRICE
    price = hardware_price(evaluator, uniform_config(), args.hw,
                           dram=args.prediction_price == "system")
    log(f"esact-tune: the prediction priced {price.mac_per_product:.3f} MAC per HLog product "
        f"({price.prediction_pj_per_product:.3f} pJ per product, {price.dense_pj_per_mac:.3f} "
        f"pJ per dense MAC on chip; {price.source})")
    return price


def tuning_hook(name: str):
    """The esact-tune hook of scheme `name` (esact_cc/sparsity/registry.py `TuningHook`)."""
    from esact_cc.runtime.errors import CommandLineError
    from esact_cc.sparsity.registry import scheme_named

    hook = scheme_named(name).tuning
    if hook is None:
        raise CommandLineError(f"--sparsity: scheme '{name}' has no esact-tune search")
    return hook


def main(argv: list[str] | None = None) -> int:
    # Parsing runs inside too: a bug while building the parser still ends with the report line.
    def parse_and_run() -> None:
        args = build_parser().parse_args(argv)
        limit_blas_threads()  # runtime/thread_policy.py: no oversubscribed busy machine
        run_cli(args)

    return exit_code_of(PROG, parse_and_run)


if __name__ == "__main__":
    sys.exit(main())
