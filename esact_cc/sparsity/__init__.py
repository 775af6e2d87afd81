"""Sparsity schemes as plugins: `--sparsity NAME` picks one from `registry`.

A scheme is one module defining `SCHEME = SparsityScheme(...)`: its name, its typed per-layer
options (a frozen dataclass whose fields are `typed_options.option`s, overridable per layer
with `LAYER:name=value`) and the passes that insert its prediction (or constant masks) per
layer, producing masks in the generic form the masked linear / attention ops take (row-reuse
map, per-query key mask, key mask). Instructions a scheme adds to the hardware are registered
with `runtime.isa.register_instruction`. Adding a scheme touches: its module, plus one line of
`registry.BUILTIN_SCHEMES` for a built-in one; with no file of the package edited, a
`register_scheme` call (e.g. test/plugins/test_every_other_row.py) or an installed package's
entry point in the group `esact_cc.sparsity_schemes` makes it selectable.
"""
