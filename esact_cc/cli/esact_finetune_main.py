"""`esact-finetune`: fine-tune a model with SPLS in the forward pass and write the ONNX back.

    esact-finetune MODEL.onnx --data FILE.npz|NAME=FILE.npz[:ARRAY] -o OUT.onnx
        [--labels-key KEY] [--sparsity-option [LAYER:]NAME=VALUE ...] [--spls-config FILE]
        [--epochs N] [--learning-rate LR] [--batch N] [--seed S] [--distill kl|cosine]
        [--label-weight W] [--label-smoothing S] [--temperature T] [--dense-weight W]
        [--anchor A] [--validation N]
        [--scored-output NAME] [--samples N] [--quiet]

Self-distillation from the dense model on the `--data` inputs (no labels needed); with
`--labels-key`, plus cross-entropy on those labels. `--temperature T` distills at temperature
T (kl). `--dense-weight W` adds W x the same loss on the model run without SPLS (mixed passes),
so the weights stay right dense too. `--anchor A` decays the trained weights
toward their original values (L2-SP), so the model moves less on inputs it never trains on.
`--validation N` holds the last N inputs apart and keeps the epoch whose loss on them (with
SPLS) is lowest, before training included. The SPLS setting trained with is the
`--sparsity-option`s over the `--spls-config` over insert-spls's defaults. OUT.onnx is MODEL
with the layers' weights replaced (same graph, same names); compile and tune it like any other
model. The loop: esact_cc/finetune/distillation.py. Needs torch (`pip install
'esact-cc[finetune]'`); without it, one error line. Errors: `esact-finetune: error: <one line>`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small GEMMs: see esact-tune

import argparse
import sys

from esact_cc.runtime.cli.conventions import tool_parser
from esact_cc.runtime.cli.user_errors import exit_code_of
from esact_cc.runtime.thread_policy import limit_blas_threads

PROG = "esact-finetune"


def build_parser() -> argparse.ArgumentParser:
    from esact_cc.finetune.distillation import DISTILL_LOSSES, FinetuneOptions

    d = FinetuneOptions()
    parser = tool_parser(PROG, "Fine-tune a model with SPLS in the forward pass (distillation "
                         "from the dense model, labels optional).")
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--data", required=True, metavar="BINDING",
                        help="training inputs, samples on axis 0: FILE.npz or "
                        "NAME=FILE.npz[:ARRAY] (the --calibration-data syntax)")
    parser.add_argument("--labels-key", metavar="KEY",
                        help="array of integer labels in the data: adds cross-entropy")
    parser.add_argument("--sparsity-option", "--spls-option", action="append", default=[],
                        metavar="[LAYER:]NAME=VALUE", help="insert-spls option trained with")
    parser.add_argument("--spls-config", metavar="FILE.json",
                        help="an esact-tune SPLS config trained with (options applied first)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="(default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate,
                        help="peak of the one-cycle schedule (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=d.batch,
                        help="inputs per optimizer step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    parser.add_argument("--distill", choices=DISTILL_LOSSES, default=d.distill,
                        help="kl: on logits; cosine: on embeddings (default: %(default)s)")
    parser.add_argument("--label-weight", type=float, default=d.label_weight,
                        help="weight of the cross-entropy term (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                        help="label smoothing of the cross-entropy (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=d.temperature, metavar="T",
                        help="kl distillation at temperature T, x T^2 (default: %(default)s)")
    parser.add_argument("--dense-weight", type=float, default=d.dense_weight, metavar="W",
                        help="add W x the loss of the pass without SPLS (mixed dense/SPLS "
                        "passes; default: %(default)s, SPLS pass only)")
    parser.add_argument("--anchor", type=float, default=d.anchor, metavar="A",
                        help="after each step w -= lr x A x (w - w_original): decay toward the "
                        "original weights (default: %(default)s, off)")
    parser.add_argument("--validation", type=int, default=d.validation, metavar="N",
                        help="the last N inputs only score each epoch; the epoch with the "
                        "lowest loss on them is written (default: %(default)s, the last epoch)")
    parser.add_argument("--scored-output", dest="output", metavar="NAME",
                        help="model output the loss is on (default: the last output)")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="use the first N inputs (default: all)")
    parser.add_argument("-o", "--output-file", dest="output_file", required=True,
                        metavar="OUT.onnx", help="the fine-tuned model")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def run_cli(args: argparse.Namespace) -> None:
    from esact_cc.finetune.torch_required import import_torch
    from esact_cc.runtime.cli.input_bindings import input_paths as binding_paths
    from esact_cc.runtime.cli.output_paths import check_output_file, refuse_overwriting_inputs
    from esact_cc.runtime.errors import CommandLineError

    if args.samples < 0:
        raise CommandLineError(f"--samples must be >= 0, got {args.samples}")
    options = _options(args)
    options.validate()
    check_output_file("-o", args.output_file)
    refuse_overwriting_inputs({"-o": args.output_file},
                              {"MODEL": args.model, **binding_paths("--data", [args.data]),
                               **({"--spls-config": args.spls_config} if args.spls_config
                                  else {})})
    import_torch()  # the missing extra is one line, before any work
    _finetune(args, options)


def _options(args: argparse.Namespace):
    from esact_cc.finetune.distillation import FinetuneOptions

    return FinetuneOptions(epochs=args.epochs, learning_rate=args.learning_rate,
                           batch=args.batch, seed=args.seed, distill=args.distill,
                           label_weight=args.label_weight,
                           label_smoothing=args.label_smoothing, anchor=args.anchor,
                           temperature=args.temperature, dense_weight=args.dense_weight,
                           validation=args.validation,
                           output=args.output)


def _finetune(args: argparse.Namespace, options) -> None:
    from esact_cc.finetune.distillation import finetune
    from esact_cc.runtime.atomic_write import atomic_write_bytes
    from esact_cc.sparsity.selection import select_scheme
    from esact_cc.tuning.spls_calibration_inputs import load_calibration_data, model_inputs

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    _, settings = select_scheme({"sparsity": "spls", "sparsity_option": args.sparsity_option,
                                 "spls_config": args.spls_config})
    data = load_calibration_data(args.data, model_inputs(args.model), args.labels_key,
                                 limit=args.samples)
    result = finetune(args.model, data.samples, data.labels, settings.pass_options(),
                      options, log)
    atomic_write_bytes(args.output_file, result.model.SerializeToString())
    if result.best_epoch == 0:
        log(f"esact-finetune: no epoch lowered the validation loss: {args.output_file} has "
            "the model's own weights")
    else:
        log(f"esact-finetune: {len(result.weights)} weights trained, loss "
            f"{result.epoch_losses[0]:.4f} -> {result.epoch_losses[result.best_epoch - 1]:.4f} "
            f"(epoch {result.best_epoch}) -> {args.output_file}")


def main(argv: list[str] | None = None) -> int:
    def parse_and_run() -> None:
        args = build_parser().parse_args(argv)
        limit_blas_threads()
        run_cli(args)

    return exit_code_of(PROG, parse_and_run)


if __name__ == "__main__":
    sys.exit(main())
