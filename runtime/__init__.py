"""ESACT runtime: the ISA spec, the .esb container, the hardware config, and the
functional and timing models. Never imports xdsl: a binary runs without the compiler."""
