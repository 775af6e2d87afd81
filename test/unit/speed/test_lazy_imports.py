"""`esact-cc --help` builds its parser without importing onnx or xdsl (seconds of start-up)."""

import subprocess
import sys

HEAVY = ("onnx", "xdsl", "onnxruntime", "ml_dtypes")


def test_help_imports_no_heavy_package() -> None:
    code = ("import sys\n"
            "from esact_cc.cli.esact_cc_main import build_parser\n"
            "assert 'usage' in build_parser().format_help()\n"
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_pipeline_import_is_light_but_compile_still_works() -> None:
    code = ("import sys\n"
            "import esact_cc.pipeline as p\n"
            f"assert not any(m in sys.modules for m in {HEAVY!r})\n"
            "assert [s.name for s in p.STAGES][0] == 'onnx'\n"
            "assert type(p.make_pass('lift-transformer')).__name__ != ''\n"
            "assert 'xdsl' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
