"""Static shapes for an ONNX model's dynamic inputs: `--input-shape NAME=1x128` per input,
`--dim seq=128` per symbolic dim (bound once, in every input that names it), and the shape
of an array given with `--input` (esact-cc --run). Shared by esact-cc and esact-opt."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

import numpy as np

from esact_cc.runtime.errors import CommandLineError


def add_shape_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                        help="static shape of a model input, e.g. input_ids=1x128 (repeatable)")
    parser.add_argument("--dim", action="append", default=[], metavar="SYMBOL=SIZE",
                        help="size of a symbolic dim wherever an input uses it, e.g. seq=128 "
                        "(repeatable)")


def parse_dim(text: str) -> tuple[str, int]:
    from esact_cc.frontend.onnx_limits import MAX_DIM

    name, sep, size = text.partition("=")
    if not sep or not name or not size.isdigit() or not 0 < int(size) <= MAX_DIM:
        raise CommandLineError(f"--dim '{text}': expected SYMBOL=SIZE with 0 < SIZE <= "
                               f"{MAX_DIM}, e.g. seq=128")
    return name, int(size)


def _symbolic_shapes(model: str | os.PathLike[str]) -> dict[str, list[int | str]]:
    """Graph inputs (not initializers) -> dims, a symbolic dim by its name ('' if unnamed)."""
    from esact_cc.frontend.onnx_frontend import load_model

    graph = load_model(model)[0].graph
    initializers = {t.name for t in graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in initializers}


def input_shapes(model: str | os.PathLike[str], shape_specs: Sequence[str],
                 dim_specs: Sequence[str],
                 arrays: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[int, ...]]:
    """Input name -> static shape: `--input-shape` first, then the `--input` arrays' shapes,
    then every input whose symbolic dims `--dim` all binds. A `--dim` no input names is an
    error (it would be ignored)."""
    from esact_cc.frontend.onnx_frontend import parse_input_shape

    shapes = dict(parse_input_shape(text) for text in shape_specs)
    for name, value in (arrays or {}).items():
        shapes.setdefault(name, tuple(value.shape))
    if not dim_specs:
        return shapes
    dims: dict[str, int] = {}
    for text in dim_specs:
        name, size = parse_dim(text)
        if name in dims:
            raise CommandLineError(f"--dim {name} given twice")
        dims[name] = size
    symbolic = _symbolic_shapes(model)
    named = {d for shape in symbolic.values() for d in shape if isinstance(d, str) and d}
    for name in dims:
        if name not in named:
            raise CommandLineError(f"--dim {name}: no input of '{model}' has a dim named "
                                   f"'{name}' (symbolic dims: {', '.join(sorted(named)) or 'none'})")
    for name, shape in symbolic.items():
        if name not in shapes and all(isinstance(d, int) and d > 0 or d in dims for d in shape):
            shapes[name] = tuple(d if isinstance(d, int) and d > 0 else dims[d] for d in shape)
    return shapes
