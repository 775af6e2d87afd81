"""`esact-sweep`: design-space sweeps over models x sparsity settings x hardware x inputs.

spec.py reads and validates the TOML spec; points.py expands it into points and groups them
by what must be compiled and executed (model, sparsity setting, the hardware parameters the
compiler reads); evaluate.py compiles and executes a group once and re-times each of its
points (runtime/retiming.py); store.py keeps finished points (resume) and writes the tidy
table; pareto.py marks and plots the Pareto fronts; runner.py runs groups on a local process
pool or a Ray cluster with a progress bar. docs/design.md section 13 describes the design.
"""
