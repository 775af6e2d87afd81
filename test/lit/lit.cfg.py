"""lit configuration for the dialect and pass tests (`.mlir` files with RUN lines)."""

import os
import shutil

import lit.formats

config.name = "esact-cc"  # noqa: F821 (lit injects `config`)
config.test_format = lit.formats.ShTest(execute_external=False)  # noqa: F821
config.suffixes = [".mlir"]  # noqa: F821
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
config.excludes = ["lit.cfg.py", "Inputs"]  # noqa: F821
config.environment["PATH"] = os.environ.get("PATH", "")  # noqa: F821
for tool in ("esact-opt", "esact-cc", "filecheck"):
    if shutil.which(tool) is None:
        lit_config.fatal(f"'{tool}' is not on PATH: install the package with pip install -e .")  # noqa: F821
