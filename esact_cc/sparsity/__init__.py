"""Sparsity schemes as plugins: `--sparsity NAME` picks one from `registry`.

A scheme is one value, `SCHEME = SparsityScheme(...)`: its name, its typed per-layer options (a
frozen dataclass whose fields are `typed_options.option`s, overridable per layer with
`LAYER:name=value`), the passes that insert its prediction (or constant masks) per layer,
producing masks in the generic form the masked linear / attention ops take (row-reuse map,
per-query key mask, key mask, token and head keep masks), and the modules of everything else it
brings (dialect, lowering, interpreter semantics, ISA rows, config file, esact-tune hook), which
the tools find through the registry. It is made selectable by one line of
`registry.BUILTIN_SCHEMES` for a built-in one, or, with no file of the package edited, a
`register_scheme` call (test/plugins/) or an installed package's entry point in the group
`esact_cc.sparsity_schemes`. docs/design.md section 11 counts the files.
"""
