"""Hostile selection streams given to the lowering's later steps (esact-allocate-buffers,
esact-order) through esact-opt: broken buffer events, virtual-buffer references and placement
directives are each one `esact-opt: error:` line, never a traceback, and nothing is written."""

from __future__ import annotations

import pytest
from hostile_run import assert_user_error, run_tool, tree_state

from esact_cc.runtime.hw_config import load_config
from esact_cc.runtime.isa import Buffer, buffer_elements

LOAD = ('esact.load pop [] push [] buf = VBUF, sram_addr = 0, dram_addr = 0, rows = 1, '
        'cols = 4 {{{attrs}}}')
VBUF_CAPACITY = buffer_elements(load_config(), Buffer.VBUF)


def program(*lines: str, selected: bool = True) -> str:
    attrs = f' attributes {{esact.config_hash = "{load_config().hash}"}}' if selected else ""
    body = "\n".join(f"  {line}" for line in (*lines, "esact.halt pop [] push []"))
    return f"builtin.module{attrs} {{\n{body}\n}}\n"


def load(attrs: str = "lowering.vbuf = {sram_addr = 0 : i64}") -> str:
    return LOAD.format(attrs=attrs)


ALLOCATION_CASES = {
    "release-unreserved": (program('lowering.release 7'),
                           ["lowering.release", "virtual buffer 7 is not a live allocated"]),
    "reserved-twice": (program('lowering.reserve 0 "VBUF" 4', 'lowering.reserve 0 "VBUF" 4'),
                       ["virtual buffer 0 is reserved twice"]),
    "released-pinned": (program('lowering.reserve 0 "VBUF" 4 at 8', 'lowering.release 0'),
                        ["virtual buffer 0 is not a live allocated"]),
    "unknown-buffer-reference": (program(load("lowering.vbuf = {sram_addr = 3 : i64}")),
                                 ["field 'sram_addr' names virtual buffer 3"]),
    "not-a-field": (program('lowering.reserve 0 "VBUF" 4',
                            load("lowering.vbuf = {nonsense = 0 : i64}")),
                    ["entry 'nonsense' is not a field"]),
    "not-a-dictionary": (program('lowering.reserve 0 "VBUF" 4', load("lowering.vbuf = 0 : i64")),
                         ["'lowering.vbuf' must map address fields"]),
    "pinned-past-the-end": (program(f'lowering.reserve 0 "VBUF" 8 at {VBUF_CAPACITY - 4}'),
                            ["pinned buffer 0 runs past the end of VBUF"]),
    "larger-than-the-buffer": (program(f'lowering.reserve 0 "VBUF" {VBUF_CAPACITY + 1}'),
                               ["VBUF", "does not fit the buffer"]),
    "not-selected": (program(selected=False), ["not a selected esact program"]),
    "negative-pin": (program('lowering.reserve 0 "VBUF" 4 at -4'),
                     ["address must be non-negative"]),
    "unknown-policy": (program('lowering.place "scatter" 1'), ["policy 'scatter' is not one of"]),
}

ORDER_CASES = {
    "hoist-not-a-load": (program("esact.halt pop [] push [] {lowering.hoist}"),
                         ["esact.halt", "'lowering.hoist' marks LOADs only"]),
    "group-not-an-integer": (program(load('lowering.group = "a"')),
                             ["'lowering.group' must be a non-negative integer"]),
    "placed-never-held": (program('lowering.label 1', 'lowering.place "interleave" 4 at 1'),
                          ["refers to a group or label not selected before it"]),
    "unknown-label": (program(load("lowering.group = 2 : i64"), 'lowering.place "aside" 2',
                              'lowering.place "prepare" 2 at 9'),
                      ["refers to a group or label not selected before it"]),
    "held-never-placed": (program(load("lowering.group = 2 : i64"), 'lowering.place "aside" 2'),
                          ["group(s) 2 held aside are never placed"]),
    "nothing-after-the-label": (program(load("lowering.group = 2 : i64"),
                                        'lowering.place "aside" 2', 'lowering.label 1',
                                        'lowering.place "prepare" 2 at 1'),
                                ["no instruction follows the label"]),
    "unallocated": (program('lowering.reserve 0 "VBUF" 4'), ["run esact-allocate-buffers first"]),
}


def _run(tmp_path, text: str, step: str):
    (tmp_path / "in.mlir").write_text(text)
    return run_tool("esact-opt", "in.mlir", "-p", step, "-o", "out.mlir", cwd=tmp_path)


def _refused(tmp_path, text: str, step: str, needles: list[str]) -> None:
    (tmp_path / "in.mlir").write_text(text)
    before = tree_state(tmp_path)
    assert_user_error(_run(tmp_path, text, step), *needles)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("case", sorted(ALLOCATION_CASES))
def test_bad_buffer_events_are_one_line(tmp_path, case: str) -> None:
    text, needles = ALLOCATION_CASES[case]
    _refused(tmp_path, text, "esact-allocate-buffers", needles)


@pytest.mark.parametrize("case", sorted(ORDER_CASES))
def test_bad_placement_directives_are_one_line(tmp_path, case: str) -> None:
    text, needles = ORDER_CASES[case]
    _refused(tmp_path, text, "esact-order", needles)


def test_a_well_formed_stream_allocates_and_orders(tmp_path) -> None:
    """The same inputs without the defect pass both steps (the cases fail for their defect)."""
    text = program('lowering.reserve 0 "VBUF" 4', load(), 'lowering.release 0')
    result = _run(tmp_path, text, "esact-allocate-buffers,esact-order")
    assert result.returncode == 0, result.stderr
    out = (tmp_path / "out.mlir").read_text()
    assert "lowering." not in out and "sram_addr = 0" in out
