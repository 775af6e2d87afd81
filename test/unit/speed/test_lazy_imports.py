"""Tool start-up imports only what it uses: `esact-cc --help` builds its parser without onnx or
xdsl (seconds of start-up); listing the sparsity schemes loads none of their passes."""

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


SCHEME_PASS_MODULES = ("esact_cc.passes.insert_spls", "esact_cc.passes.insert_sanger",
                       "esact_cc.passes.insert_spatten", "esact_cc.runtime.hw_config")


def test_listing_schemes_dialects_and_passes_loads_no_pass_module() -> None:
    # What esact-opt and esact-cc do at every start (esact_cc/sparsity/registry.py): the
    # built-in schemes name their options class and passes, imported when the scheme runs.
    code = ("import sys\n"
            "from esact_cc.dialect_registry import get_all_dialects\n"
            "from esact_cc.passes.registry import get_all_passes\n"
            "from esact_cc.sparsity.registry import all_schemes\n"
            "assert {'insert-spls', 'insert-sanger', 'insert-spatten'} <= set(get_all_passes())\n"
            "assert {'spls', 'sanger', 'spatten'} <= set(get_all_dialects())\n"
            "schemes = all_schemes()\n"
            f"print(','.join(sorted(m for m in {SCHEME_PASS_MODULES!r} if m in sys.modules)))\n"
            # reading a scheme's options still finds its class (and imports its pass module)
            "assert all(s.options_class() is None or s.options_class().__name__ for s in schemes)\n"
            "assert 'esact_cc.passes.insert_spls' in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
