"""Dense, SPLS, Sanger and SpAtten compared like for like on several models (issue 13 item 5).

    python bench/scheme_comparison.py [--models digits,minilm,bert128,bert512,vit197]
        [--layers 2] [--calib N] [--inputs N] [--hw-inputs 1] [--budget 1]
        [--min-cosine 0.99] [--uniform-only] [--no-curves] [--prediction-price design|hardware|system]
        [--out-dir bench/results]
    python bench/scheme_comparison.py --markdown   # rebuild the table from the JSONs

Per model (bench/scheme_comparison_models.py; all but digits need the `models` extra), each
scheme is tuned by esact-tune's search on calibration inputs to one budget, measured on
reporting inputs held apart, lowered to a binary and run on the hardware model, whose outputs
must equal the INT8 reference interpreter's bit for bit (bench/scheme_comparison_core.py).
Writes bench/results/scheme_comparison_<model>.json and .png (one trade-off plot per model:
computation removed against accuracy loss, one curve per scheme) after each model, then
bench/results/scheme_comparison.md (the table, bench/scheme_comparison_report.py) from the
JSONs of the models asked for. `--layers` keeps that many encoder layers of the random-weight
BERT and ViT models (the trained digits ViT and MiniLM keep theirs).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # many small GEMMs: threads only contend

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheme_comparison_core import (  # noqa: E402
    SCHEMES,
    SEARCHES,
    Settings,
    compare_case,
    write_json,
)
from scheme_comparison_models import MODEL_NAMES, build_case  # noqa: E402
from scheme_comparison_report import markdown, plot  # noqa: E402

from esact_cc.cli.esact_tune_main import screen_margin_value  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_LAYERS = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class WarningsOnce:
    """stderr that lets each distinct `warning:` line through once: the passes warn per
    compile (a layer a scheme leaves dense), and a tuning compiles the same IR many times."""

    def __init__(self, stream) -> None:
        self.stream, self.seen, self.pending = stream, set(), ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if line.startswith("warning:"):
                if line in self.seen:
                    continue
                self.seen.add(line)
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.write(self.pending)
        self.pending = ""
        self.stream.flush()


def names(text: str, valid: tuple[str, ...], what: str,
          parser: argparse.ArgumentParser) -> tuple[str, ...]:
    chosen = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in chosen if n not in valid]
    if bad or not chosen:
        parser.error(f"--{what}: expected some of {', '.join(valid)}, got {text!r}")
    return chosen


def choices_text(args: argparse.Namespace) -> str:
    return (f"random-weight BERT / ViT keep {args.layers} encoder layers; calibration / "
            f"reporting inputs per model as each section says (`--calib {args.calib or 'default'}"
            f" --inputs {args.inputs or 'default'}`); hardware model on the first "
            f"{args.hw_inputs} reporting input(s); per-layer tuning "
            f"{'off' if args.uniform_only else 'on'}; SPLS search tables {args.search or 'full for digits / MiniLM, quick for BERT / ViT'}; budget {args.budget:g} point(s) with "
            f"labels, mean cosine >= {args.min_cosine:g} to FP32 without; the prediction "
            f"priced by esact-tune at the {args.prediction_price} price; SPLS layer screen "
            f"margin {args.screen_margin if args.screen_margin is not None else 'default'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--layers", type=int, default=DEFAULT_LAYERS,
                        help="encoder layers of the random-weight BERT / ViT models")
    parser.add_argument("--calib", type=int, default=0,
                        help="calibration inputs (0: the model's default)")
    parser.add_argument("--inputs", type=int, default=0,
                        help="reporting inputs (0: the model's default)")
    parser.add_argument("--hw-inputs", type=int, default=1,
                        help="reporting inputs run on the hardware model")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="accuracy points below dense INT8 (labelled models)")
    parser.add_argument("--min-cosine", type=float, default=0.99,
                        help="mean cosine to the FP32 model (unlabelled models)")
    parser.add_argument("--uniform-only", action="store_true",
                        help="no per-layer phase in the tuning (faster)")
    parser.add_argument("--no-curves", action="store_true",
                        help="no uniform curve per scheme (no trade-off plot lines)")
    parser.add_argument("--search", choices=SEARCHES, default=None,
                        help="SPLS search tables: esact-tune's, or a smaller grid "
                        "(scheme_comparison_core.QUICK_SEARCH; quick-deep: with esact-tune's "
                        "per-layer thresholds); default: full for digits and MiniLM, quick "
                        "for the random-weight BERT and ViT")
    parser.add_argument("--prediction-price", choices=("design", "hardware", "system"),
                        default="design",
                        help="esact-tune's MACs per HLog product: design (0.1) or measured "
                        "on the hardware model, on chip (hardware) or with the DRAM traffic "
                        "beyond dense (system) (esact-tune --prediction-price)")
    parser.add_argument("--screen-margin", type=screen_margin_value, default=None,
                        metavar="auto|STEPS",
                        help="esact-tune --screen-margin for SPLS: ladder steps a layer's "
                        "threshold floor keeps above where its layer screen went over "
                        "budget, or auto (chosen by esact-tune's held-apart check; "
                        "default: esact-tune's, auto)")
    parser.add_argument("--hw", default=None,
                        help="hardware config TOML for every model (default: the default)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true",
                        help="only rebuild the table and plots from the JSONs in --out-dir")
    args = parser.parse_args(argv)
    models = names(args.models, MODEL_NAMES, "models", parser)
    schemes = names(args.schemes, SCHEMES, "schemes", parser)
    if "dense" not in schemes:
        schemes = ("dense", *schemes)  # every ratio is against the dense program
    if args.layers < 1 or args.hw_inputs < 1 or args.calib < 0 or args.inputs < 0:
        parser.error("--layers and --hw-inputs must be >= 1, --calib and --inputs >= 0")
    if isinstance(args.screen_margin, int) and args.screen_margin < 0:
        parser.error(f"--screen-margin must be >= 0 ladder steps, got {args.screen_margin}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    command = "python bench/scheme_comparison.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if not args.markdown:
        sys.stderr = WarningsOnce(sys.stderr)
        settings = Settings(args.budget, args.min_cosine, args.hw_inputs,
                            not args.uniform_only, not args.no_curves, schemes, args.search,
                            args.prediction_price, args.screen_margin)
        for name in models:
            start, cpu = time.time(), time.process_time()
            with tempfile.TemporaryDirectory(prefix=f"scheme-comparison-{name}-") as tmp:
                case = build_case(name, Path(tmp), args.layers, args.calib, args.inputs)
                case.hw = args.hw
                result = compare_case(case, settings, log)
            result["seconds"] = round(time.time() - start, 1)
            result["cpu_seconds"] = round(time.process_time() - cpu, 1)  # ~ wall when idle
            result["command"] = command
            result["choices"] = choices_text(args)
            write_json(args.out_dir / f"scheme_comparison_{name}.json", result)
            plot(result, args.out_dir / f"scheme_comparison_{name}.png")
            log(f"{name}: done in {result['seconds']} s ({result['cpu_seconds']} s CPU)")
    results = []
    for name in models:
        path = args.out_dir / f"scheme_comparison_{name}.json"
        if not path.exists():
            log(f"no result for {name} ({path}): run it first")
            continue
        results.append(json.loads(path.read_text()))
        if args.markdown:
            plot(results[-1], path.with_suffix(".png"))
    if results:
        table = markdown(results)
        (args.out_dir / "scheme_comparison.md").write_text(table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
