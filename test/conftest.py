"""Suite-wide settings.

pytest-xdist already runs one worker per core; letting OpenBLAS start its own thread pool in
every worker (and in every CLI subprocess, which inherits the environment) oversubscribes the
cores and makes small matrix products 10-100x slower. Set before numpy is first imported.
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# esact-cc's compile cache (esact_cc/compile_cache.py) of this run only: never the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="esact_test_cache_")

# Fixtures shared by test files in different directories (test/helpers/*.py, no tests there).
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

# Property tests draw the same examples on every run (a seed per test), so a CI run is red only
# for a change, never for a draw; HYPOTHESIS_PROFILE=explore draws new ones (bug hunting).
from hypothesis import settings as _hypothesis_settings

_hypothesis_settings.register_profile("deterministic", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
