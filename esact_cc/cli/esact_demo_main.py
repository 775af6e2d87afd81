"""`esact-demo`: the main job on the bundled digits ViT, end to end.

Compiles the bundled model to an ESACT binary (INT8, calibrated on its calibration split),
runs every held-out test image on the functional model, compares top-1 predictions and
accuracy against onnxruntime on the same file, and prints the timing/energy report of one
inference. `--output-dir` keeps the binary, the report and the trace.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from esact_cc.runtime.cli.conventions import tool_parser
from esact_cc.runtime.cli.output_paths import check_output_dir, refuse_overwriting_inputs
from esact_cc.runtime.cli.user_errors import exit_code_of
from esact_cc.runtime.errors import CommandLineError

PROG = "esact-demo"
CALIBRATION, BINARY, REPORT, TRACE = "calibration.npz", "model.esb", "report.json", "trace.json"
DEMO_FILES = (CALIBRATION, BINARY, REPORT, TRACE)
"""What the demo writes (to --output-dir, else a temporary directory)."""


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="number of held-out test images to run (default: all)")
    parser.add_argument("--sparsity", choices=("dense", "spls"), default="dense")
    parser.add_argument("--hw", default=None, metavar="CONFIG",
                        help="hardware config: a TOML file or a bundled config name (default: "
                        "default)")
    parser.add_argument("--calibration-data", metavar="BINDING",
                        help="calibration inputs instead of the bundled split: FILE.npz or "
                        "pixel_values=FILE.npz[:ARRAY] (esact-cc's syntax)")
    parser.add_argument("--output-dir", default=None,
                        help="keep model.esb, report.json and trace.json here")
    return parser


def _onnxruntime_logits(onnx_path: Path, input_name: str, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {input_name: image[None]})[0] for image in images])


def run_demo(args: argparse.Namespace, work_dir: Path) -> int:
    from esact_cc import api
    from esact_cc.bundled_model import load_bundled_model
    from esact_cc.backend.emit_esb import emit_esb
    from esact_cc.runtime.atomic_write import atomic_write
    from esact_cc.runtime.functional import execute
    from esact_cc.runtime.hw_config import resolve_config
    from esact_cc.runtime.report import format_summary, write_report
    from esact_cc.runtime.run_program import run_program
    from esact_cc.runtime.trace import write_trace

    config = resolve_config(args.hw)  # a bad --hw fails before the compile
    model = load_bundled_model()
    count = len(model.test_images) if args.samples is None else args.samples
    if not 1 <= count <= len(model.test_images):
        raise CommandLineError(f"--samples must be in 1..{len(model.test_images)}, got {count}")
    images, labels = model.test_images[:count], model.test_labels[:count]

    calibration_path = work_dir / CALIBRATION
    atomic_write(calibration_path,
                 lambda handle: np.savez(handle, **{model.input_name: model.calibration_images}))
    print(f"compiling {model.onnx_path.name} ({model.metadata['task']}) ...", file=sys.stderr,
          flush=True)
    extra = {"calibration_data": args.calibration_data or str(calibration_path), "hw": args.hw}
    if args.sparsity != "dense":
        extra["sparsity"] = args.sparsity
    compiled = api.compile(model.onnx_path, stage="esact", **extra)
    binary_path = work_dir / BINARY
    program = emit_esb(compiled.module, binary_path, compiled.store)
    print(f"binary: {binary_path} ({binary_path.stat().st_size:,} bytes, "
          f"{len(program.instructions):,} instructions)", file=sys.stderr, flush=True)

    reference = _onnxruntime_logits(model.onnx_path, model.input_name, images)
    esact = np.concatenate([
        next(iter(execute(program, {model.input_name: image[None]}, config).outputs.values()))
        for image in images
    ])
    agree = float(np.mean(reference.argmax(1) == esact.argmax(1)))
    acc_ref = float(np.mean(reference.argmax(1) == labels))
    acc_esact = float(np.mean(esact.argmax(1) == labels))
    print(f"\n{count} held-out digits test images")
    print(f"  {'onnxruntime (fp32)':<30}{acc_ref:7.2%}")
    label = f"esact-run (INT8, {args.sparsity})"
    print(f"  {label:<30}{acc_esact:7.2%}   ({(acc_esact - acc_ref) * 100:+.2f} points)")
    print(f"  {'top-1 agreement':<30}{agree:7.2%}\n")

    result = run_program(program, {model.input_name: images[:1]}, config,
                         meta={"binary": str(binary_path), "model": model.onnx_path.name})
    write_report(work_dir / REPORT, result.report)
    write_trace(work_dir / TRACE, result.trace())
    print(f"report of one inference ({REPORT}, {TRACE} in "
          f"{work_dir if args.output_dir else 'a temporary directory; keep them with --output-dir'}):")
    sys.stdout.write(format_summary(result.report))
    return 0


def main(argv: list[str] | None = None) -> int:
    def demo() -> int:
        from esact_cc.runtime.cli.input_bindings import input_paths as binding_paths

        args = build_parser().parse_args(argv)
        specs = [args.calibration_data] if args.calibration_data else []
        if args.output_dir:
            check_output_dir("--output-dir", args.output_dir)
            out = Path(args.output_dir)
            refuse_overwriting_inputs({f"--output-dir ({name})": out / name
                                       for name in DEMO_FILES},
                                      {"--hw": args.hw, **binding_paths("--calibration-data", specs)})
            out.mkdir(parents=True, exist_ok=True)
            return run_demo(args, out)
        with tempfile.TemporaryDirectory(prefix="esact-demo-") as tmp:
            return run_demo(args, Path(tmp))

    return exit_code_of(PROG, demo)


if __name__ == "__main__":
    sys.exit(main())
